"""Small plugins for the plugin-loading tests (`tests/test_plugins.py`): good ones, and ones
broken in each way the registry must survive.  Each module is a plugin, as an entry point's
value names it."""
