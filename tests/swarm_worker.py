"""An emulated swarm: real torch DDP and DiLoCo over gloo between network-namespace hosts.

Two halves in one file, so that the test and `make bench` run the very same experiment:

- the rank side (`python tests/swarm_worker.py RANK WORLD MASTER PORT CONFIG`, started inside a lab
  host): trains `probes.training.GPT` and answers JSON commands on stdin with one JSON line each;
- the driver side (`validate`): starts one rank per host, shapes the hosts' links with tbf, runs
  each phase at each rate and sets the measured times beside `bench.projection`'s.

How each strategy is set up, and why:

- DDP: overlap with the backward pass (PyTorch's behaviour) and the stock `fp16_compress_hook`, so
  gradients cross the link as 16-bit values, as the projection assumes (`Settings.grad_bits = 16`:
  bf16 training all-reduces bf16 gradients). Buckets of 0.25 MiB instead of 25 MiB: see
  BUCKET_CAP_MB. The projection models overlap as step = compute/3 + max(2·compute/3, all-reduce).
- DiLoCo (Douillard et al. 2023): H inner AdamW steps from the shared outer weights, then the
  pseudo-gradient (outer − local) is cast to fp16, all-reduced in DDP-sized buckets, averaged and
  applied by an outer Nesterov SGD step (lr 0.7, momentum 0.9, the paper's values).
- "allreduce": an fp16 buffer of the model's size all-reduced alone, in the same buckets, to check
  the projection's communication term (`ring_allreduce_s`) apart from any compute or overlap.
- gloo all-reduces a dense CPU tensor with a ring (reduce-scatter, then all-gather: gloo/allreduce.cc),
  so each rank sends 2(n−1)/n of the buffer and receives as much. `measure_rate` counts what each
  host's uplink really sent, so that figure is checked rather than assumed.

Node compute is measured beside each phase, in the same processes at the same moment: a step of
the same model with no communication, on every rank at once (so the ranks share the CPU as they do
under DDP). The validation is about the link and overlap terms; a matmul figure would bring in the
training-share assumption, whose error on a tiny CPU model says nothing about a swarm.
"""

from __future__ import annotations

import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel
from torch.nn.utils import parameters_to_vector

from bench import projection as pj
from bench.projection import Figure, ModelSpec, Node, Settings, ddp, diloco, model_spec, ring_allreduce_s, with_link
from bench.projection.pipeline import pipeline_schedule_s, stage_transfer_s
from netns import Host, Lab
from probes.training import GPT, GPTConfig, adamw

#: 1.13M parameters (model_spec's floor is 1M): 2.25 MB of fp16 gradients, 0.18-1.8 s on 100-10 Mbit/s.
#: A small vocabulary keeps the output head at 6% of the weights, as in an LLM (Llama 2 7B: 2%), so
#: the backward pass reaches its first gradients early, as it does there.
MODEL = GPTConfig(n_layer=5, n_embd=128, n_head=4, seq_len=64, vocab_size=512, batch_size=4)
#: DDP bucket size. 0.25 MiB is 6% of this model's 4.5 MB of fp32 gradients, so the all-reduce can
#: start soon after the backward does, as it can with the default 25 MiB buckets of a multi-GB
#: gradient. The default here (a 1 MiB first bucket, then the rest in one) holds back 77% of the
#: gradients until the backward ends: in one run, 1.17x the projection at 100 Mbit/s and 1.29x at 400.
BUCKET_CAP_MB = 0.25
#: The same buckets for DiLoCo's pseudo-gradients: as many values as a DDP bucket of fp32 gradients.
BUCKET_ELEMENTS = int(BUCKET_CAP_MB * 2**20) // 4
#: DiLoCo's outer optimizer (Douillard et al. 2023, section 3).
OUTER_LR = 0.7
OUTER_MOMENTUM = 0.9
#: Home links are asymmetric; the downlink is shaped to this multiple of the uplink.
DOWNLINK_FACTOR = 4
#: tbf queue depth (its `latency`): a home router's buffer, which TCP fills before it backs off.
QUEUE_S = 0.05
#: tbf bucket, in seconds of traffic at the shaped rate (see `shape`).
BURST_S = 0.005
BATCHES = 4
_COMMAND_TIMEOUT_S = 180.0

# ------------------------------------------------------------------------------------------------
# Rank side
# ------------------------------------------------------------------------------------------------


class _Rank:
    """One process of the swarm: a DDP replica and a DiLoCo replica of the same model."""

    def __init__(self, rank: int, world: int, cfg: GPTConfig) -> None:
        self.rank, self.world, self.cfg = rank, world, cfg
        torch.manual_seed(0)  # identical initial weights on every rank
        self.ddp = DistributedDataParallel(GPT(cfg), bucket_cap_mb=BUCKET_CAP_MB)
        self.ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
        self.ddp_opt, _ = adamw(self.ddp)
        torch.manual_seed(0)
        self.local = GPT(cfg)
        self.local_opt, _ = adamw(self.local)
        self.outer = torch.nn.Parameter(parameters_to_vector(self.local.parameters()).detach().clone())
        self.outer_opt = torch.optim.SGD([self.outer], lr=OUTER_LR, momentum=OUTER_MOMENTUM, nesterov=True)
        gen = torch.Generator().manual_seed(1 + rank)  # each rank trains on its own data
        shape = (BATCHES, cfg.batch_size, cfg.seq_len)
        self.tokens = torch.randint(cfg.vocab_size, shape, generator=gen)
        self.targets = torch.randint(cfg.vocab_size, shape, generator=gen)
        self.flat = torch.randn(cfg.n_params, generator=gen).half()
        self.turn = 0

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        i = self.turn % BATCHES
        self.turn += 1
        return self.tokens[i], self.targets[i]

    def _local_step(self) -> float:
        """One training step with no communication; its duration."""
        start = time.perf_counter()
        self.local(*self._batch()).backward()
        self.local_opt.step()
        self.local_opt.zero_grad()
        return time.perf_counter() - start

    def _synced(self, work: Callable[[], object]) -> float:
        """Duration of `work`, started on every rank together (the barrier itself is not timed)."""
        dist.barrier()
        start = time.perf_counter()
        work()
        return time.perf_counter() - start

    def _ddp_step(self) -> None:
        self.ddp(*self._batch()).backward()  # returns once every bucket's all-reduce has finished
        self.ddp_opt.step()
        self.ddp_opt.zero_grad()

    def _diloco_round(self, h: int, inner: list[float]) -> None:
        """One outer step; appends the mean of its H inner steps to `inner` (a mean, not a median:
        the round waits for all H, and with more ranks than cores some of them are slow)."""
        with torch.no_grad():
            offset = 0
            for p in self.local.parameters():
                p.copy_(self.outer[offset : offset + p.numel()].view_as(p))
                offset += p.numel()
        inner.append(sum(self._local_step() for _ in range(h)) / h)
        delta = (self.outer.detach() - parameters_to_vector(self.local.parameters()).detach()).half()
        _bucketed_all_reduce(delta)
        self.outer.grad = delta.float().div_(self.world)
        self.outer_opt.step()
        self.outer_opt.zero_grad()

    def _ddp_accumulated(self, micro: int) -> None:
        """`micro` micro-batches, the gradients all-reduced on the last one only (DDP's no_sync)."""
        with self.ddp.no_sync():
            for _ in range(micro - 1):
                self.ddp(*self._batch()).backward()
        self.ddp(*self._batch()).backward()
        self.ddp_opt.step()
        self.ddp_opt.zero_grad()

    def _local_accumulated(self, micro: int) -> float:
        """The same step with no communication; its duration."""
        start = time.perf_counter()
        for _ in range(micro):
            self.local(*self._batch()).backward()
        self.local_opt.step()
        self.local_opt.zero_grad()
        return time.perf_counter() - start

    def _stage_forward(self, tokens: torch.Tensor, x: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor:
        """This rank's pipeline stage: rank 0 embeds and runs the first blocks, rank 1 the rest and the loss."""
        model, split = self.local, self.cfg.n_layer // 2
        if self.rank == 0:
            positions = torch.arange(tokens.shape[1])
            x = model.token_embedding(tokens) + model.position_embedding(positions)
            for block in model.blocks[:split]:
                x = block(x)
            return x
        assert x is not None
        for block in model.blocks[split:]:
            x = block(x)
        logits = model.head(model.ln_f(x))
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def _activation_shape(self) -> tuple[int, int, int]:
        return (self.cfg.batch_size, self.cfg.seq_len, self.cfg.n_embd)

    def _pipeline_step(self, micro: int) -> None:
        """GPipe over two hosts: every forward, its activations sent on; then every backward, the
        activation gradients sent back (gloo send/recv, fp32)."""
        outs: list[torch.Tensor] = []
        sends = []
        for _ in range(micro):
            tokens, targets = self._batch()
            if self.rank == 0:
                out = self._stage_forward(tokens, None, targets)
                outs.append(out)
                sends.append(dist.isend(out.detach().contiguous(), 1))
            else:
                x = torch.empty(self._activation_shape())
                dist.recv(x, 0)
                x.requires_grad_(True)
                self._stage_forward(tokens, x, targets).backward()
                assert x.grad is not None
                sends.append(dist.isend(x.grad.contiguous(), 0))
        if self.rank == 0:
            for out in outs:
                grad = torch.empty(self._activation_shape())
                dist.recv(grad, 1)
                out.backward(grad)
        for work in sends:
            work.wait()
        self.local_opt.zero_grad()  # no optimizer step: the schedule is what is checked

    def _local_stage(self, micro: int) -> float:
        """This rank's stage for `micro` micro-batches with no communication, per micro-batch; one
        rank at a time, as the stages mostly take turns in a two-stage GPipe."""
        grad = torch.ones(self._activation_shape())
        elapsed = 0.0
        for turn in range(self.world):
            dist.barrier()
            if turn != self.rank:
                continue
            start = time.perf_counter()
            for _ in range(micro):
                tokens, targets = self._batch()
                if self.rank == 0:
                    self._stage_forward(tokens, None, targets).backward(grad)
                else:
                    x = torch.randn(self._activation_shape(), requires_grad=True)
                    self._stage_forward(tokens, x, targets).backward()
            elapsed = time.perf_counter() - start
        self.local_opt.zero_grad()
        return elapsed / micro

    def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Run `steps` of one phase, with compute timed beside it so that load from other
        processes on this machine weighs on both alike."""
        phase, steps = cmd["phase"], int(cmd.get("steps", 0))
        out: dict[str, Any] = {"rank": self.rank, "phase": phase}
        if phase == "ddp":
            pairs = [(self._synced(self._ddp_step), self._local_step()) for _ in range(steps)]
            out["step_s"], out["compute_s"] = [p[0] for p in pairs], [p[1] for p in pairs]
            out["checksum"] = float(sum(p.double().sum() for p in self.ddp.parameters()))
        elif phase == "diloco":
            inner: list[float] = []
            out["step_s"] = [self._synced(lambda: self._diloco_round(cmd["h"], inner)) for _ in range(steps)]
            out["compute_s"] = inner
            out["checksum"] = float(self.outer.double().sum())
        elif phase == "ddp_accum":
            micro = int(cmd["micro"])
            pairs = [(self._synced(lambda: self._ddp_accumulated(micro)), self._local_accumulated(micro))
                     for _ in range(steps)]
            out["step_s"], out["compute_s"] = [p[0] for p in pairs], [p[1] for p in pairs]
            out["checksum"] = float(sum(p.double().sum() for p in self.ddp.parameters()))
        elif phase == "pipeline":
            micro = int(cmd["micro"])
            pairs = [(self._synced(lambda: self._pipeline_step(micro)), self._local_stage(micro)) for _ in range(steps)]
            out["step_s"], out["compute_s"] = [p[0] for p in pairs], [p[1] for p in pairs]
        elif phase == "allreduce":
            out["step_s"] = [self._synced(lambda: _bucketed_all_reduce(self.flat)) for _ in range(steps)]
        elif phase == "latency":
            tiny = torch.ones(64)
            out["step_s"] = [self._synced(lambda: dist.all_reduce(tiny)) for _ in range(steps)]
        elif phase == "info":
            data = self.ddp._get_ddp_logging_data()
            out["buckets"] = str(data.get("rebuilt_bucket_sizes") or data.get("bucket_sizes"))
        else:
            raise ValueError(f"unknown phase {phase!r}")
        return out


def _bucketed_all_reduce(flat: torch.Tensor) -> None:
    """Sum `flat` over the ranks in DDP-sized buckets, all in flight at once, as DDP sends gradients.

    One gloo all-reduce of the whole buffer keeps only two segments in flight (gloo/allreduce.cc)
    and stalls on a slow link: on 3 hosts at 25 Mbit/s it took 1.11-1.25x `ring_allreduce_s` over
    four runs, while its bytes on the wire were 1.07x; in buckets, which gloo's worker threads
    interleave, the same bytes took 1.07-1.08x.
    """
    works = [dist.all_reduce(chunk, async_op=True) for chunk in flat.split(BUCKET_ELEMENTS)]
    for work in works:
        work.wait()


def main(argv: Sequence[str]) -> None:
    """Join the gloo group over the host's eth0, then answer commands until "quit"."""
    rank, world, master, port, config = int(argv[0]), int(argv[1]), argv[2], int(argv[3]), argv[4]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://{master}:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    worker = _Rank(rank, world, GPTConfig(**json.loads(config)))
    print(json.dumps({"rank": rank, "phase": "ready"}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["phase"] == "quit":
            break
        print(json.dumps(worker.handle(cmd)), flush=True)
    dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------
# Driver side
# ------------------------------------------------------------------------------------------------


class Swarm:
    """One rank per host, driven by JSON lines; each rank's stderr goes to a file in `log_dir`."""

    def __init__(self, hosts: Sequence[Host], cfg: GPTConfig, log_dir: Path, port: int) -> None:
        self.hosts = list(hosts)
        self.logs = [log_dir / f"rank{i}-of-{len(hosts)}-port{port}.log" for i in range(len(hosts))]
        env = {**os.environ, "GLOO_SOCKET_IFNAME": hosts[0].interface, "OMP_NUM_THREADS": "1"}
        self.procs: list[subprocess.Popen[str]] = []
        self.replies: list[queue.Queue[str | None]] = []
        for rank, (host, log) in enumerate(zip(self.hosts, self.logs)):
            with log.open("w") as err:
                proc = host.popen(sys.executable, str(Path(__file__).resolve()), str(rank), str(len(hosts)),
                                  hosts[0].address, str(port), json.dumps(asdict(cfg)),
                                  stdin=subprocess.PIPE, stderr=err, env=env, bufsize=1)
            replies: queue.Queue[str | None] = queue.Queue()
            threading.Thread(target=_pump, args=(proc, replies), daemon=True).start()
            self.procs.append(proc)
            self.replies.append(replies)
        self._collect("ready")

    def _failed(self, rank: int, what: str) -> RuntimeError:
        tail = self.logs[rank].read_text(errors="replace")[-2000:]
        return RuntimeError(f"swarm rank {rank} {what}; its stderr ends:\n{tail}")

    def _collect(self, phase: str) -> list[dict[str, Any]]:
        """Every rank's answer; fails as soon as any rank has exited, not after the others time out."""
        answers: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + _COMMAND_TIMEOUT_S
        while len(answers) < len(self.replies):
            if time.monotonic() > deadline:
                raise self._failed(min(set(range(len(self.replies))) - set(answers)), f"gave no answer to {phase!r}")
            for rank, replies in enumerate(self.replies):
                if rank in answers:
                    continue
                try:
                    line = replies.get(timeout=0.05)
                except queue.Empty:
                    continue
                if line is None:
                    raise self._failed(rank, f"exited during {phase!r}")
                answers[rank] = json.loads(line)
        return [answers[rank] for rank in range(len(self.replies))]

    def ask(self, phase: str, **args: Any) -> list[dict[str, Any]]:
        """Every rank runs `phase` (collectively); their replies, by rank."""
        line = json.dumps({"phase": phase, **args}) + "\n"
        for rank, proc in enumerate(self.procs):
            assert proc.stdin is not None
            try:
                proc.stdin.write(line)
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                raise self._failed(rank, f"is gone before {phase!r}") from None
        return self._collect(phase)

    def close(self) -> None:
        """Ask the ranks to leave the group; the lab kills whatever does not."""
        for proc in self.procs:
            if proc.poll() is None and proc.stdin is not None:
                try:
                    proc.stdin.write(json.dumps({"phase": "quit"}) + "\n")
                    proc.stdin.close()
                except (BrokenPipeError, OSError):
                    pass
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _pump(proc: subprocess.Popen[str], replies: queue.Queue[str | None]) -> None:
    """Forward the worker's JSON lines; None once it has exited (EOF)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            replies.put(line)
    replies.put(None)


@contextmanager
def swarm(hosts: Sequence[Host], cfg: GPTConfig, log_dir: Path, port: int) -> Iterator[Swarm]:
    """A Swarm that is closed however the block ends."""
    s = Swarm(hosts, cfg, log_dir, port)
    try:
        yield s
    finally:
        s.close()


def shape(hosts: Sequence[Host], uplink: float) -> None:
    """A home link on every host: `uplink` out, DOWNLINK_FACTOR x that in (tbf at each end of its cable).

    As `Host.shape_uplink`/`shape_downlink` do, but with a bucket of BURST_S of traffic instead of
    1 ms: tbf releases packets from a timer, and on a loaded machine a timer late by more than the
    bucket holds loses that much of the link for good (measured on a busy 2-core host: all-reduces
    10-20% over their wire time with 1 ms, 0-6% with 5 ms). A modem's shaper has no such jitter.
    """
    for host in hosts:
        for namespace, device, rate in ((host.name, host.interface, uplink),
                                        (host.lab.switch, host.port, uplink * DOWNLINK_FACTOR)):
            burst = max(4000, int(rate / 8 * BURST_S))
            subprocess.run(["tc", "-n", namespace, "qdisc", "replace", "dev", device, "root", "tbf",
                            "rate", f"{int(rate)}bit", "burst", str(burst), "latency", f"{int(QUEUE_S * 1000)}ms"],
                           check=True, capture_output=True, text=True, timeout=30)  # fmt: skip


def tx_bytes(host: Host) -> int:
    """Bytes the host's uplink tbf has sent: whole Ethernet frames, ACKs included, each segment of
    a TSO burst with its own headers; what tbf charges against the rate."""
    out = subprocess.run(["tc", "-n", host.name, "-s", "-j", "qdisc", "show", "dev", host.interface],
                         check=True, capture_output=True, text=True, timeout=30).stdout
    (qdisc,) = [q for q in json.loads(out) if q.get("kind") == "tbf"]
    return int(qdisc["bytes"])


def _pace(replies: Sequence[dict[str, Any]], key: str = "step_s") -> float:
    """The slowest rank's median: a synchronous swarm moves at its pace."""
    return max(statistics.median(r[key]) for r in replies)


@dataclass(frozen=True)
class Plan:
    """How much of each phase to run at each rate (warm-up first, discarded)."""

    warmup: int = 2
    ddp_steps: int = 5
    diloco_h: int = 4
    diloco_rounds: int = 3
    allreduce_reps: int = 3
    latency_reps: int = 20
    #: DDP with gradient accumulation: micro-batches per step (2 hosts only).
    accum_micro: int = 4
    accum_steps: int = 4
    #: The two-stage pipeline: micro-batches per step (2 hosts only).
    pipeline_micro: int = 3
    pipeline_steps: int = 4
    #: The rates at which those two run; None: every rate of a 2-host run.
    two_host_rates: tuple[float, ...] | None = None


def _node(spec: ModelSpec, cfg: GPTConfig, compute_s: float, uplink: float, rtt_s: float, micro: int = 1) -> Node:
    """A node whose training FLOP/s is what the measured local step (of `micro` micro-batches) achieved."""
    rate = micro * cfg.tokens_per_step * spec.flops_per_token / compute_s
    unused = "not used: the validation compares step times only"
    node = Node(name="lab host (1 CPU thread)", dtype="fp32",
                flops=Figure(rate, "measured: steps of the same model without communication, beside the phase"),
                utilisation=Figure(1.0, "the measured rate is training's own"),
                memory_bytes=Figure(float(2**34), unused), watts=Figure(1.0, unused), idle_watts=Figure(1.0, unused))
    return with_link(node, uplink_bps=uplink, downlink_bps=uplink * DOWNLINK_FACTOR, rtt_s=rtt_s,
                     source="tc tbf rate of the lab link; RTT from a 64-value all-reduce")


def measure_rate(s: Swarm, cfg: GPTConfig, uplink: float, plan: Plan) -> list[dict[str, Any]]:
    """Shape every host to `uplink`, run each phase and set it beside its projection: one row per phase."""
    n = len(s.hosts)
    shape(s.hosts, uplink)
    rtt = _pace(s.ask("latency", steps=plan.latency_reps)) / (n - 1)  # a ring pays 2(n-1) one-way latencies
    spec = model_spec(float(cfg.n_params), layers=cfg.n_layer, width=cfg.n_embd, heads=cfg.n_head,
                      seq=cfg.seq_len, vocab=cfg.vocab_size, batch_tokens=float(n * cfg.tokens_per_step))
    tokens = 1e3 * spec.batch_tokens  # any amount: the step time does not depend on it
    grad_bytes = 2 * cfg.n_params  # fp16 on the wire, DDP and DiLoCo alike
    allreduce = ring_allreduce_s(grad_bytes, n, uplink, uplink * DOWNLINK_FACTOR, rtt)
    phases: dict[str, tuple[int, int, dict[str, int]]] = {
        "ddp": (plan.warmup, plan.ddp_steps, {}),
        "diloco": (1, plan.diloco_rounds, {"h": plan.diloco_h}),
        "allreduce": (0, plan.allreduce_reps, {}),  # the link is warm by then
    }
    if n == 2 and (plan.two_host_rates is None or uplink in plan.two_host_rates):
        phases["ddp_accum"] = (1, plan.accum_steps, {"micro": plan.accum_micro})
        phases["pipeline"] = (1, plan.pipeline_steps, {"micro": plan.pipeline_micro})
    rows = []
    for phase, (warmup, steps, extra) in phases.items():
        if warmup:
            s.ask(phase, steps=warmup, **extra)
        before = [tx_bytes(h) for h in s.hosts]
        replies = s.ask(phase, steps=steps, **extra)
        sent = [(tx_bytes(h) - b) / steps for h, b in zip(s.hosts, before)]
        measured = _pace(replies)
        compute = 0.0
        projected, comm = allreduce, allreduce
        if phase == "ddp":
            compute = _pace(replies, "compute_s")
            proj = ddp(spec, pj.Swarm.uniform(_node(spec, cfg, compute, uplink, rtt), n), tokens, settings=Settings(grad_bits=16))
            projected, comm = proj.step_s, proj.comm_s
        elif phase == "diloco":
            compute = _pace(replies, "compute_s")
            settings = Settings(diloco_h=plan.diloco_h, diloco_bits=16)
            proj = diloco(spec, pj.Swarm.uniform(_node(spec, cfg, compute, uplink, rtt), n), tokens, settings=settings)
            projected, comm = proj.step_s, proj.comm_s
            measured /= plan.diloco_h  # per inner step, as the projection gives it
        elif phase == "ddp_accum":
            compute = _pace(replies, "compute_s")
            micro = plan.accum_micro
            accum = model_spec(float(cfg.n_params), layers=cfg.n_layer, width=cfg.n_embd, heads=cfg.n_head,
                               seq=cfg.seq_len, vocab=cfg.vocab_size, batch_tokens=float(n * micro * cfg.tokens_per_step))
            settings = Settings(grad_bits=16, micro_batch_tokens=cfg.tokens_per_step)
            node = _node(accum, cfg, compute, uplink, rtt, micro=micro)
            proj = ddp(accum, pj.Swarm.uniform(node, n), tokens, settings=settings)
            projected, comm = proj.step_s, proj.comm_s
        elif phase == "pipeline":
            compute = _pace(replies, "compute_s")  # the slower stage, per micro-batch
            transfer = stage_transfer_s(spec, 32, uplink, uplink * DOWNLINK_FACTOR, sequences=cfg.batch_size)
            projected = pipeline_schedule_s(plan.pipeline_micro, 2, compute, transfer, rtt)
            comm = projected - plan.pipeline_micro * compute
        assert projected is not None and comm is not None
        rows.append({
            "strategy": phase, "hosts": n, "uplink_bps": uplink, "downlink_bps": uplink * DOWNLINK_FACTOR,
            "rtt_s": rtt, "compute_s": compute, "projected_comm_s": comm,
            "measured_s": measured, "projected_s": projected, "ratio": measured / projected,
            "ring_bytes_per_rank": 2 * (n - 1) / n * grad_bytes, "wire_bytes_per_rank": sent,
            "checksums": [r.get("checksum") for r in replies],
        })  # fmt: skip
    return rows


def validate(lab: Lab, log_dir: Path, runs: Sequence[tuple[int, Sequence[float]]],
             plan: Plan = Plan(), cfg: GPTConfig = MODEL) -> dict[str, Any]:
    """Each (hosts, uplink rates) run on the lab's first `hosts` hosts: measured vs projected rows."""
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    buckets = ""
    for i, (n, rates) in enumerate(runs):
        if not 2 <= n <= len(lab.hosts):
            raise ValueError(f"a run needs 2 to {len(lab.hosts)} hosts, got {n}")
        shape(lab.hosts[:n], 10e9)  # DDP's initial broadcast of the weights is not part of a step
        with swarm(lab.hosts[:n], cfg, log_dir, port=29500 + i) as s:
            for rate in rates:
                rows += measure_rate(s, cfg, rate, plan)
            buckets = s.ask("info")[0]["buckets"]
    return {
        "model": {**asdict(cfg), "params": cfg.n_params, "ddp_bucket_bytes": buckets},
        "plan": asdict(plan), "queue_s": QUEUE_S, "burst_s": BURST_S, "rows": rows,
        "seconds": time.perf_counter() - started,
    }


if __name__ == "__main__":
    main(sys.argv[1:])
