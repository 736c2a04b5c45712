"""Performance stats of the simulated hosts and VMs, as xcp-rrdd serves them: the load model
(model.py, activity.py), the RRD formats (export.py) and the HTTP handlers (http.py)."""
