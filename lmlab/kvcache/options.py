"""The names the KV-cache flags take — each policy with its own options — without importing torch,
so that the command line can list them while it starts (``lmlab.cli.common.add_kv_options``)."""

#: the options of ``settings.cache_settings`` each policy takes (beyond its budget)
POLICY_OPTIONS = {"full": (), "window": (), "streaming": ("sinks", "window"), "h2o": ("recent", "normalize"),
                  "snapkv": ("window", "kernel"), "pyramidkv": ("window", "kernel", "beta"), "tova": (),
                  "knorm": ()}
