"""Talking to a Label Studio server (start a local one or connect, push tasks, list annotations).

Pure I/O: the client sends what it is given and returns what the server holds. It never
imports the library; choosing images and writing the project store happen in
:mod:`almdn.workflow.labeling`.
"""
