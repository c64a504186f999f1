"""`kiri dashboard`: a local web page of what KIRI sees, with one-click feedback.

A front (bench/layout.py): it reads the floors (the store, the recordings, the weights files,
status.json) and calls the feedback commands' own functions, so that its buttons record exactly
what `kiri feedback` and `kiri rules delete` record. server.py starts it, app.py is the web
application, views.py what it shows, scores.py the recorded scores, security.py who may use it.
"""
