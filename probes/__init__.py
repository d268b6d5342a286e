"""The probes, one module each: they measure and return typed measurements, never print or store.

Their names are here, apart from the modules, so that the CLI can list them without importing
torch.
"""

#: Probes run when --only is not given. network needs --server, collective a rendezvous.
DEFAULT_PROBES = ("compute", "memory", "training")
#: Probes measured once per device, in this order (training reads compute's figure); the others once per run.
PER_DEVICE_PROBES = ("compute", "memory", "training")
KNOWN_PROBES = (*PER_DEVICE_PROBES, "network", "collective")
