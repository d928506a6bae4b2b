"""`assynch detect`: the sync of a whole video, window by window, with bounded memory.

windows.py cuts consecutive windows from one streaming decode; inference.py runs the streaming
model over them; analysis.py turns per-window probabilities into an offset, a verdict and drift
segments; report.py is the JSON document and its schema; plot.py draws the timeline; fix.py
writes a corrected copy (PyAV remux); loading.py finds the model. See docs/DETECT.md.
"""
