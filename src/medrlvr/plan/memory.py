"""The memory plan of a PPO run: bytes per GPU in each phase of an iteration, and the largest micro-batch that fits.

Two phases alternate on every GPU. *Generation*: the rollout engine samples completions (vLLM awake with its
``gpu_memory_utilization`` share, or the policy itself with ``rollout=hf``) while the trainer's model states stay
put. *Training*: the no-grad log-prob/value passes over chunks of ``algo.forward_batch_size`` rows, then the
update's forward/backward passes over micro-batches of ``algo.micro_batch_size`` rows (vLLM asleep: its weights
and KV cache released).

Model states (weights, gradients, optimizer) of the trainable parameters under DeepSpeed come from DeepSpeed's
own ZeRO estimators; activations from :class:`medrlvr.plan.sizes.Skeleton`; the vocabulary projection from
:mod:`medrlvr.models.logprobs`' chunking (one chunk of ``model.logits_chunk_size`` tokens alive at a time).
"""

from __future__ import annotations

from dataclasses import dataclass

from medrlvr.config import ConfigError, TrainConfig
from medrlvr.plan.sizes import ModelSizes, Skeleton

GIB = 2**30
# ZeRO-2's estimator counts 18 bytes per trainable parameter over the GPUs: "2_grads_16bit + 4_grads_32bit +
# 4_params_32bit + 8_optimizer_states_32bit" (deepspeed/runtime/zero/stage_1_and_2.py); 6 of them are gradients.
ZERO_GRADIENT_BYTES = 6
# ZeRO's contiguous-gradient buckets: reduce_bucket_size 16-bit elements, two of them under ZeRO-2 with
# overlap_comm (stage_1_and_2.py setup_buckets), one under ZeRO-3 (stage3.py).
# fp32 vocabulary-sized tensors alive at the peak of one chunk's log-prob pass, measured on this CPU by
# benchmarks/memory_plan_check.py. Without gradients: two (the projection upcast to fp32 and divided by the
# temperature, and logsumexp's temporary). With gradients: the saved fp32 logits and the softmax, its product
# and their gradients in the backward pass, besides the projection's output in the activation dtype.
UPDATE_LOGIT_COPIES = 4
NO_GRAD_LOGIT_COPIES = 2


@dataclass(frozen=True)
class Item:
    """One line of a phase: ``bytes`` per GPU."""

    name: str
    bytes: int
    note: str = ""


@dataclass(frozen=True)
class Phase:
    name: str
    items: tuple[Item, ...]

    @property
    def total(self) -> int:
        return sum(item.bytes for item in self.items)


@dataclass(frozen=True)
class GpuPlan:
    """The phases on one GPU size, the largest micro-batch whose update fits (None: none does) and what
    cannot fit whatever the micro-batch."""

    gpu_bytes: int
    phases: tuple[Phase, ...]
    largest_micro_batch: int | None
    problem: str = ""

    @property
    def peak(self) -> int:
        return max(phase.total for phase in self.phases)

    @property
    def fits(self) -> bool:
        return self.peak <= self.gpu_bytes and not self.problem


@dataclass(frozen=True)
class Plan:
    """``setting``: what the plan was made for; ``host_bytes``: host memory per node for offloaded states."""

    setting: dict[str, object]
    gpus: tuple[GpuPlan, ...]
    host_bytes: int = 0


DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def activation_dtype(cfg: TrainConfig) -> str:
    """The dtype passes run in: 16-bit under bf16/fp16 precision, else ``model.dtype``."""
    if cfg.trainer.precision.startswith("bf16"):
        return "bfloat16"
    if cfg.trainer.precision.startswith("16"):
        return "float16"
    return cfg.model.dtype


@dataclass(frozen=True)
class Counts:
    """Parameters of the three models as the PPO module builds them (see ``ActorCritic``)."""

    actor_trainable: int
    actor_frozen: int
    critic_trainable: int
    critic_frozen: int
    reference: int

    @staticmethod
    def of(sizes: ModelSizes, cfg: TrainConfig) -> Counts:
        lora = cfg.model.lora_rank > 0
        critic = cfg.model.critic if cfg.algo.uses_critic else "none"
        head = sizes.hidden_size + 1 if critic != "none" else 0
        trunk_lora = sizes.lora_params if critic == "separate" and lora else 0
        critic_trunk = sizes.trunk_params if critic == "separate" else 0
        return Counts(
            actor_trainable=sizes.lora_params if lora else sizes.lm_params,
            actor_frozen=sizes.lm_params if lora else 0,
            critic_trainable=head + (trunk_lora if lora else critic_trunk),
            critic_frozen=critic_trunk if lora else 0,
            reference=0 if lora else sizes.lm_params,
        )


def zero_states(cfg: TrainConfig, trainable: int, largest_layer: int) -> tuple[int, int, int, int, int]:
    """DeepSpeed's estimate for ``trainable`` parameters per GPU: (16-bit weights, gradients, optimizer states,
    ZeRO-3's gathered largest layer, host bytes per node)."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    ds, gpus = cfg.trainer.deepspeed, cfg.trainer.devices * cfg.trainer.num_nodes
    where = {"num_gpus_per_node": cfg.trainer.devices, "num_nodes": cfg.trainer.num_nodes}
    if ds.stage == 3:
        def estimate(offload: bool, offload_params: bool) -> tuple[int, int, int]:
            return estimate_zero3_model_states_mem_needs(
                trainable, largest_layer, cpu_offload=offload, cpu_offload_params=offload_params, **where
            )

        _, resident, gathered = estimate(True, False)  # optimizer states and gradients on the host
        _, whole, _ = estimate(False, False)
        host, _, _ = estimate(ds.offload_optimizer, ds.offload_parameters)
        weights = 0 if ds.offload_parameters else resident - gathered
    else:
        _, resident = estimate_zero2_model_states_mem_needs(trainable, cpu_offload=True, **where)
        _, whole = estimate_zero2_model_states_mem_needs(trainable, cpu_offload=False, **where)
        host, _ = estimate_zero2_model_states_mem_needs(trainable, cpu_offload=ds.offload_optimizer, **where)
        weights, gathered = resident, 0
    states = 0 if ds.offload_optimizer else whole - resident - gathered
    gradients = min(states, ZERO_GRADIENT_BYTES * trainable // gpus)
    return weights, gradients, states - gradients, gathered, host if ds.offload_optimizer else 0


def model_state_items(cfg: TrainConfig, sizes: ModelSizes, counts: Counts) -> tuple[list[Item], int]:
    """Weights, gradients and optimizer states per GPU, and host bytes per node (optimizer offload)."""
    precision = activation_dtype(cfg)
    deepspeed = cfg.trainer.strategy == "deepspeed"
    weight_bytes = 2 if deepspeed and precision != "float32" else DTYPE_BYTES[cfg.model.dtype]
    gpus = cfg.trainer.devices * cfg.trainer.num_nodes
    partition = gpus if deepspeed and cfg.trainer.deepspeed.stage == 3 else 1
    frozen_note = "frozen" + (f", ZeRO-3 partition of {gpus}" if partition > 1 else "")
    items: list[Item] = []
    host = 0
    grads = optimizer = 0
    for name, trainable, frozen in (
        ("actor", counts.actor_trainable, counts.actor_frozen),
        ("critic", counts.critic_trainable, counts.critic_frozen),
    ):
        if trainable == 0:
            continue
        if deepspeed:
            weights, g, o, gathered, h = zero_states(cfg, trainable, sizes.largest_layer_params)
            host += h
            if gathered and not any(i.name.startswith("ZeRO-3 gathered") for i in items):
                items.append(Item("ZeRO-3 gathered layer", gathered, "DeepSpeed's estimator: largest layer, 4 bytes/param"))
        else:
            weights, g, o = trainable * weight_bytes, trainable * weight_bytes, 2 * trainable * weight_bytes
        note = f"{trainable / 1e6:,.1f} M trainable"
        if frozen:
            note += f" + {frozen / 1e6:,.1f} M {frozen_note}"
        items.append(Item(f"{name} weights", weights + frozen * weight_bytes // partition, note))
        grads, optimizer = grads + g, optimizer + o
    if counts.reference:
        items.append(Item("reference weights", counts.reference * weight_bytes // partition, frozen_note))
    if deepspeed:
        offloaded = " (offloaded to the host)" if cfg.trainer.deepspeed.offload_optimizer else ""
        items.append(Item("gradients", grads, "DeepSpeed's estimator: 16- and 32-bit partitions" + offloaded))
        items.append(Item("optimizer states", optimizer, "DeepSpeed's estimator: fp32 weights + Adam moments" + offloaded))
        ds = cfg.trainer.deepspeed
        buffers = 2 if ds.stage < 3 and ds.overlap_comm else 1
        items.append(Item("ZeRO gradient buckets", buffers * ds.bucket_size * 2, f"{buffers} x trainer.deepspeed.bucket_size"))
    else:
        items.append(Item("gradients", grads, f"{weight_bytes} bytes/trainable param"))
        items.append(Item("optimizer states", optimizer, f"AdamW moments, 2 x {weight_bytes} bytes/trainable param"))
        if cfg.trainer.strategy == "ddp":
            items.append(Item("DDP gradient buckets", grads, "a copy of the gradients"))
    return items, host


@dataclass(frozen=True)
class Workload:
    """Token counts of one iteration per GPU: ``rows`` completions of ``prompt`` + ``response`` tokens."""

    rows: int
    prompt: int
    response: int

    @property
    def length(self) -> int:
        return self.prompt + self.response


def update_items(cfg: TrainConfig, skeleton: Skeleton, sizes: ModelSizes, work: Workload, micro: int) -> list[Item]:
    """Forward/backward of one micro-batch of ``micro`` rows: activations kept for backward, the vocabulary
    projection of one chunk, and the backward pass's working set (one layer's gradients)."""
    act = DTYPE_BYTES[activation_dtype(cfg)]
    trunks = 2 if cfg.algo.uses_critic and cfg.model.critic == "separate" else 1
    layer = skeleton.layer_saved_bytes(micro, work.length)
    layer_input = micro * work.length * sizes.hidden_size * act
    norm = skeleton.norm_saved_bytes(micro, work.length)
    layers = sizes.trainable_layers
    if cfg.model.gradient_checkpointing:
        per_trunk, how = layers * layer_input + layer + norm, f"checkpointed: {layers} layer inputs + 1 layer recomputed"
    else:
        per_trunk, how = layers * layer + norm, f"{layers} layers"
    both = ", actor + critic" if trunks == 2 else ""
    chunk = min(cfg.model.logits_chunk_size, micro * work.response)
    logits = chunk * sizes.vocab_size * (UPDATE_LOGIT_COPIES * 4 + act)
    recompute = " (recomputed in backward)" if micro * work.response > cfg.model.logits_chunk_size else ""
    return [
        Item("activations", trunks * per_trunk, f"{micro} x {work.length} tokens, {how}" + both),
        Item("logits", logits, f"{chunk} tokens x {sizes.vocab_size} vocabulary{recompute}"),
        Item("backward working set", layer, "gradients of one layer's activations"),
    ]


def no_grad_items(cfg: TrainConfig, skeleton: Skeleton, sizes: ModelSizes, work: Workload, rows: int) -> list[Item]:
    """One chunk of ``rows`` of the no-grad log-prob and value passes: the hidden states, plus the larger of the
    trunk's working set (one layer's intermediates, and the prompt's KV cache when prompts run once for the
    rows sharing them) and one chunk of logits, which come after the trunk has finished."""
    act = DTYPE_BYTES[activation_dtype(cfg)]
    hidden = 2 * rows * work.length * sizes.hidden_size * act
    sharing = not (cfg.trainer.strategy == "deepspeed" and cfg.trainer.deepspeed.stage == 3)
    trunk = skeleton.layer_saved_bytes(rows, work.length) + (rows * work.prompt * sizes.kv_bytes_per_token if sharing else 0)
    chunk = min(cfg.model.logits_chunk_size, rows * work.response)
    logits = chunk * sizes.vocab_size * NO_GRAD_LOGIT_COPIES * 4
    larger = f"logits of {chunk} tokens" if logits >= trunk else "one layer" + (" + prompt KV cache" if sharing else "")
    return [Item("no-grad pass", hidden + max(trunk, logits), f"{rows} x {work.length} tokens; peak: {larger}")]


def experience_item(cfg: TrainConfig, sizes: ModelSizes, work: Workload) -> Item:
    """The iteration's experience: token ids and masks (int64), ten fp32 per-token tensors, and the frozen
    layers' output when LoRA trains the top layers only."""
    act = DTYPE_BYTES[activation_dtype(cfg)]
    frozen = work.rows * work.length * sizes.hidden_size * act if sizes.trainable_layers < sizes.num_layers else 0
    tensors = work.rows * (2 * work.length * 8 + 10 * work.response * 4) + frozen
    return Item("experience", tensors, f"{work.rows} completions")


def vllm_kv_bytes(cfg: TrainConfig, sizes: ModelSizes, gpu_bytes: int) -> tuple[int, int]:
    """vLLM's ``(share, KV cache bytes)`` per GPU: ``gpu_memory_utilization`` of the GPU, less its weights."""
    vllm = cfg.rollout.vllm
    share = int(vllm.gpu_memory_utilization * gpu_bytes)
    weights = sizes.lm_params * DTYPE_BYTES[vllm.dtype or cfg.model.dtype] // vllm.tensor_parallel_size
    return share, share - weights


def generation_items(cfg: TrainConfig, sizes: ModelSizes, work: Workload, gpu_bytes: int) -> list[Item]:
    """The rollout engine while it generates: vLLM's share of the GPU, or the HF static KV cache and logits."""
    if cfg.rollout.backend == "vllm":
        share, kv = vllm_kv_bytes(cfg, sizes, gpu_bytes)
        kv_tokens = max(kv, 0) // (sizes.kv_bytes_per_token // cfg.rollout.vllm.tensor_parallel_size)
        note = (
            f"{cfg.rollout.vllm.gpu_memory_utilization} of the GPU: weights {(share - kv) / GIB:.1f} GiB, KV cache "
            f"{max(kv, 0) / GIB:.1f} GiB = {kv_tokens:,} tokens ({kv_tokens // work.length} sequences of {work.length})"
        )
        return [Item("vLLM (weights + KV cache)", share, note)]
    rows = min(cfg.rollout.generation_batch_size, work.rows)
    return [
        Item("HF KV cache", rows * work.length * sizes.kv_bytes_per_token, f"{rows} x {work.length} tokens"),
        Item("HF step logits", rows * sizes.vocab_size * (4 + sizes.dtype_bytes), f"{rows} rows"),
    ]


def check(cfg: TrainConfig, sizes: ModelSizes, work: Workload) -> None:
    """Settings no GPU can run, as errors naming the key."""
    if cfg.trainer.devices < 1:
        raise ConfigError(
            f"trainer.devices: the plan needs the GPU count per node (e.g. trainer.devices=8), got {cfg.trainer.devices}"
        )
    if work.length > sizes.max_positions:
        raise ConfigError(
            f"rollout.max_new_tokens: prompt_tokens ({work.prompt}) + max_new_tokens ({work.response}) = {work.length} "
            f"exceeds the model's {sizes.max_positions} positions"
        )
    if cfg.rollout.backend == "vllm" and cfg.rollout.vllm.max_model_len and work.length > cfg.rollout.vllm.max_model_len:
        raise ConfigError(
            f"rollout.vllm.max_model_len: {cfg.rollout.vllm.max_model_len} is shorter than "
            f"prompt_tokens + max_new_tokens = {work.length}"
        )


def memory_plan(
    cfg: TrainConfig, skeleton: Skeleton, gpu_gib: list[float], prompt_tokens: int, forward_follows_micro: bool
) -> Plan:
    """The plan of ``cfg`` on GPUs of each size in ``gpu_gib`` (GiB), prompts of ``prompt_tokens`` tokens.

    ``forward_follows_micro``: ``algo.forward_batch_size`` was left null, so it moves with the micro-batch
    while the largest micro-batch that fits is searched.
    """
    sizes = skeleton.sizes()
    work = Workload(cfg.data.batch_size * cfg.rollout.num_samples, prompt_tokens, cfg.rollout.max_new_tokens)
    check(cfg, sizes, work)
    states, host = model_state_items(cfg, sizes, Counts.of(sizes, cfg))
    experience = experience_item(cfg, sizes, work)
    awake_in_training = cfg.rollout.backend == "vllm" and not cfg.rollout.vllm.sleep_between_steps

    def training(micro: int, gpu_bytes: int) -> tuple[Phase, Phase]:
        engine = generation_items(cfg, sizes, work, gpu_bytes) if awake_in_training else []
        forward = micro if forward_follows_micro else cfg.algo.forward_batch_size
        no_grad = no_grad_items(cfg, skeleton, sizes, work, forward)  # type: ignore[arg-type]
        update = update_items(cfg, skeleton, sizes, work, micro)
        common = (*states, experience, *engine)
        return Phase("log-probs", (*common, *no_grad)), Phase("update", (*common, *update))

    micro = cfg.algo.micro_batch_size
    candidates = [m for m in range(1, cfg.algo.mini_batch_size + 1) if cfg.algo.mini_batch_size % m == 0]
    plans = []
    for gib in gpu_gib:
        gpu_bytes = int(gib * GIB)
        generation = Phase("generation", (*states, *generation_items(cfg, sizes, work, gpu_bytes)))
        fitting = [m for m in candidates if all(p.total <= gpu_bytes for p in training(m, gpu_bytes))]
        problem = ""
        if cfg.rollout.backend == "vllm":
            share, kv = vllm_kv_bytes(cfg, sizes, gpu_bytes)
            if kv <= 0:
                problem = (
                    f"rollout.vllm.gpu_memory_utilization={cfg.rollout.vllm.gpu_memory_utilization} gives vLLM "
                    f"{share / GIB:.1f} GiB, not more than its weights ({(share - kv) / GIB:.1f} GiB): no room for a KV cache"
                )
        plans.append(GpuPlan(gpu_bytes, (generation, *training(micro, gpu_bytes)), max(fitting, default=None), problem))
    setting = {
        "model": cfg.model.name_or_path,
        "gpus": f"{cfg.trainer.devices} per node x {cfg.trainer.num_nodes} node(s)",
        "strategy": cfg.trainer.strategy
        + (f" ZeRO-{cfg.trainer.deepspeed.stage}" if cfg.trainer.strategy == "deepspeed" else ""),
        "precision": cfg.trainer.precision,
        "gradient_checkpointing": cfg.model.gradient_checkpointing,
        "rollout": cfg.rollout.backend,
        "completions_per_gpu": work.rows,
        "prompt_tokens": work.prompt,
        "max_new_tokens": work.response,
        "mini_batch_size": cfg.algo.mini_batch_size,
        "micro_batch_size": micro,
        "forward_batch_size": micro if forward_follows_micro else cfg.algo.forward_batch_size,
        "logits_chunk_size": cfg.model.logits_chunk_size,
    }
    return Plan(setting, tuple(plans), host)
