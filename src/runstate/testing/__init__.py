"""Stand-ins for the demo, the launch checks and the tests; not part of the SDK.

* :mod:`runstate.testing.effects` - a real, tiny side-effect service that counts what it is
  asked to do (the "email", "notification" and "scoring" calls of the examples), and its
  client;
* :mod:`runstate.testing.credit_limit` - the article's example agent, which sends its side
  effects there.

They ship in the package because ``runstate demo`` and ``runstate check`` run them against a
deployment (a synthetic run whose side effects must land somewhere countable). Nothing that
runs in production imports this package: not the agent SDK (``runstate.agents``), the
runtime, retention, the run domain, streams or schemas (``tests/test_layers.py`` holds the
line); only the ``checks`` layer and the ``demo``/``check`` commands do. Do not build on it:
its HTTP API and classes change with the examples.
"""
