"""`draftwise check`: the compatibility doctor (report) and its printing (render).

It sits above the engine (it test-generates with the draft), beside the CLI and bench layers;
the pairing decision itself lives below, in draftwise.pairing.decision.
"""
