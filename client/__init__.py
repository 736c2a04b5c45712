"""The `xo-migrate` terminal client: login, ls, plan, migrate, watch, cancel, history.

A client of the API like xo-cli (it never imports the server): it talks to any xo-migrate over
its WebSocket JSON-RPC API with a token stored at `login`. Modules, one job each:
`args.py` (the command line, stdlib only so that `serve` imports nothing of this),
`main.py` (runs a command, maps outcomes to exit codes), `registration.py` (the stored server
URL and token), `connection.py` (JSON-RPC over the WebSocket, pushed notifications),
`inventory.py` (objects and name resolution), `commands.py` (what each command does),
`board.py` (following migrations from their pushed objects), `output.py` (the three ways of
showing things: rich on a terminal, plain lines otherwise, JSON for scripts),
`units.py` (bytes, rates, durations for people).

Exit codes: 0 success, 1 failure, 2 usage (bad arguments, unknown or ambiguous names),
130 interrupted.
"""
