"""The round trip with a Label Studio server (start or connect, push tasks, pull annotations).

Its server/ and client modules are built on the project store; see the store / Label Studio issue.
"""
