"""`leadctl sandbox`: fake providers on loopback. server.py serves them (with faults on demand),
wires.py speaks each provider's wire format, callbacks.py posts signed status callbacks."""
