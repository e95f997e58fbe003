"""What the two I/O shells share.

eagle's logic lives once, in the sans-IO :mod:`eagle.core`; two thin shells do the grpc
I/O around it: :mod:`eagle._sync` (``grpc.Channel``) and :mod:`eagle.aio`
(``grpc.aio.Channel``). This package holds the grpc-facing pieces both of them use:

* :mod:`~eagle.shell.base` - the shell-independent half of a channel;
* :mod:`~eagle.shell.subchannels` - one grpc sub-channel per member, cached multicallables;
* :mod:`~eagle.shell.options` - the grpc options each sub-channel gets;
* :mod:`~eagle.shell.probes` - the wire format of a health probe;
* :mod:`~eagle.shell.outcomes` - what a grpc error says about an attempt (for the core);
* :mod:`~eagle.shell.scheduling` - how both probers use APScheduler;
* :mod:`~eagle.shell.forking` - fork safety.
"""
