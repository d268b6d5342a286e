"""What training a model would take: colocated in a datacenter, or on a swarm of home machines.

Pure computation (no I/O, no module-level mutable state): the CLI builds the inputs, this package
returns numbers, the report draws them. Every formula is written down, with its source, in
docs/projection.md; the function that applies it names the section. All figures are SI: FLOP/s,
bytes, B/s for memory and datacenter fabrics, bit/s for home links, s, W, J, USD, kg CO2.

Its parts, one file each:

- model.py: the model (presets, FLOPs per token) and its memory per GPU (`Figure`, `memory_per_gpu`);
- nodes.py: a swarm node (datasheet card or stored run, several GPUs, the host around them) and the
  datacenter's fabric and server power;
- swarm.py: an uneven swarm of node groups, its slowest member, part-time nodes, a CSV of nodes;
- quality.py: what a strategy costs in tokens: `diloco_token_factor(replicas, inner_steps, params,
  worker_batch_tokens)`, DiLoCo's literature band (low/central/high, with its source and the
  published range), and the critical-batch factor;
- collectives.py: ring and tree all-reduce over home links;
- strategies.py: the datacenter (`colocated`), swarm `ddp` and `diloco`, and `Settings`;
- pipeline.py: the SWARM-style pipeline and its planner;
- energy.py: power, money and CO2, `Prices`, and the `Projection` every strategy returns;
- sweep.py: the `Scenario`, `project`, `sweep` over swarm sizes, `best`;
- claims.py: the common claims, answered.
"""

from bench.projection.claims import Claims, claims
from bench.projection.collectives import allreduce_s, ring_allreduce_s, tree_allreduce_s
from bench.projection.energy import Prices, Projection, Strategy
from bench.projection.model import DAY, HOUR, YEAR, Figure, Memory, MemoryOptions, ModelSpec, PRESETS, \
    memory_per_gpu, model_spec, parse_quantity
from bench.projection.nodes import DEFAULT_MFU, Node, datacenter_watts_per_gpu, node_from_card, node_from_run, \
    node_sources, with_link, with_power
from bench.projection.pipeline import pipeline
from bench.projection.quality import TokenFactor, critical_batch_factor, critical_batch_tokens, diloco_token_factor
from bench.projection.strategies import Settings, colocated, ddp, diloco
from bench.projection.swarm import NodeGroup, Swarm, parse_nodes_csv
from bench.projection.sweep import STRATEGIES, SWARM_STRATEGIES, Scenario, best, default_tokens, matched_dc_gpus, \
    project, scenario, sweep

__all__ = [
    "Claims", "claims", "allreduce_s", "ring_allreduce_s", "tree_allreduce_s", "Prices", "Projection", "Strategy",
    "DAY", "HOUR", "YEAR", "Figure", "Memory", "MemoryOptions", "ModelSpec", "PRESETS", "memory_per_gpu",
    "model_spec", "parse_quantity", "DEFAULT_MFU", "Node", "datacenter_watts_per_gpu", "node_from_card",
    "node_from_run", "node_sources", "with_link", "with_power", "pipeline", "TokenFactor", "critical_batch_factor",
    "critical_batch_tokens", "diloco_token_factor", "Settings", "colocated", "ddp", "diloco", "NodeGroup", "Swarm",
    "parse_nodes_csv", "STRATEGIES", "SWARM_STRATEGIES", "Scenario", "best", "default_tokens", "matched_dc_gpus",
    "project", "scenario", "sweep",
]
