"""The training step captured in one CUDA graph (``train.cuda_graph = true``).

A small recurrent network's step launches thousands of small kernels (a 4 x 64 ConvLSTM over
19 steps: about 3900), and on a GPU the launches, not the arithmetic, set its time. A CUDA
graph records every kernel of one step (forward, loss, backward, clipping, Adam) once and
replays them with one launch. The recipe is PyTorch's "whole network capture"
(``torch.cuda.graphs``):

1. the first :data:`WARMUP_STEPS` steps run eagerly on a side stream (real steps of those
   iterations, so that cuDNN and the caching allocator settle before capture);
2. the next step is captured on the frames and mask of *static* input tensors, with
   ``Adam(capturable=True)`` so that the optimiser's step counter lives on the GPU;
3. every step then copies its batch into the static inputs and replays the graph.

A replay runs the same kernels on the same data as the eager step, so a graphed run trains
like an eager one (to floating-point rounding: the captured kernels may be other cuDNN
algorithms than the eager ones), and it resumes like one: a resumed run warms up and
captures again. What a graph cannot do, and so what ``train.cuda_graph`` refuses before
anything is written: a CPU device; several processes (torchrun); ``train.compile``; a
learning-rate schedule (Adam's float learning rate is baked into the captured kernels);
transfer methods whose step reads more than the frames and mask (a memory bank, live
sources, a per-iteration schedule: ``tmu``, ``distill``, ``kflow``). The one difference in
behaviour: a non-finite loss or gradient norm is seen after the replay, so the update of that
step has been applied in memory; the run stops as an eager one does, before that step's
checkpoint, and the last good checkpoint is kept.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from transmem.config import ConfigError, RunConfig
from transmem.data.batch import TrainingBatch
from transmem.models import RecurrentPredictor
from transmem.training.step import apply_gradients, step_loss, training_step

WARMUP_STEPS = 3  # eager steps before the capture (PyTorch's recipe uses a few)


def check_graphable(config: RunConfig, device: torch.device, method, distributed: bool) -> None:
    """Refuse (ConfigError, one line) a run that ``train.cuda_graph`` cannot capture.
    ``method``: the transfer method (its class or an instance): a graph replays only a step
    that reads nothing but the batch's frames and mask (no source, memory bank or
    per-iteration schedule)."""
    if not config.train.cuda_graph:
        return
    if device.type != "cuda":
        raise ConfigError(f"train.cuda_graph: captures the training step in a CUDA graph and needs a CUDA device, not {device}")
    if distributed:
        raise ConfigError("train.cuda_graph: not supported under torchrun (DistributedDataParallel); set it to false")
    if method.reads_sources_every_step:
        raise ConfigError(
            f"train.cuda_graph: method {config.transfer.method!r} reads sources or a memory bank at every step, "
            "which a replayed graph cannot follow; it works with none, finetune and fusion"
        )


class GraphedTrainingStep:
    """``step(batch, iteration, diverged) -> (loss, terms)``, as :func:`training_step`, with
    the step captured in a CUDA graph after :data:`WARMUP_STEPS` eager steps (module docstring).

    The returned loss and terms are the graph's output tensors: read them (``.item()``)
    before the next step, which overwrites them.
    """

    def __init__(
        self,
        model: RecurrentPredictor,
        forward_model: torch.nn.Module,
        method,
        optimizer: torch.optim.Optimizer,
        config: RunConfig,
    ) -> None:
        self.model, self.forward_model, self.method = model, forward_model, method
        self.optimizer, self.config = optimizer, config
        self.eager_steps = 0
        self.stream: torch.cuda.Stream | None = None  # one side stream for the warm-up and the capture
        self.graph: torch.cuda.CUDAGraph | None = None
        self.frames: Tensor | None = None  # the static inputs the graph reads
        self.mask: Tensor | None = None
        self.loss: Tensor | None = None  # and the outputs it writes
        self.terms: dict[str, Tensor] = {}
        self.norm: Tensor | None = None  # the gradient norm before clipping

    def __call__(self, batch: TrainingBatch, iteration: int, diverged: Callable[..., Exception]):
        if self.graph is None and self.eager_steps < WARMUP_STEPS:
            self.stream = self.stream or torch.cuda.Stream(batch.frames.device)
            self.stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.stream):
                result = training_step(
                    self.model, self.forward_model, self.method, self.optimizer, None, self.config, batch, iteration, diverged
                )
            torch.cuda.current_stream().wait_stream(self.stream)
            self.eager_steps += 1
            return result
        if self.graph is None:
            self._capture(batch, iteration)
        self.frames.copy_(batch.frames)
        self.mask.copy_(batch.mask)
        self.graph.replay()
        if not torch.isfinite(self.loss):
            raise diverged(self.loss)
        if not torch.isfinite(self.norm):
            raise diverged(self.norm, "gradient norm")
        return self.loss, self.terms

    def _capture(self, batch: TrainingBatch, iteration: int) -> None:
        """Record one step on static copies of ``batch`` (nothing runs until a replay)."""
        self.frames, self.mask = batch.frames.clone(), batch.mask.clone()
        static = TrainingBatch(batch.indices, self.frames, self.mask)
        self.optimizer.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        # the warm-up's stream (libraries such as cuBLAS keep handles per stream: made there, not mid-capture)
        with torch.cuda.graph(self.graph, stream=self.stream):
            self.loss, self.terms = step_loss(
                self.model, self.forward_model, self.method, self.config, static, iteration, autocast_cache=False
            )
            self.norm = apply_gradients(self.model, self.optimizer, self.config, self.loss)


def make_step(model: RecurrentPredictor, forward_model: torch.nn.Module, method, optimizer, scheduler, config: RunConfig):
    """The training loop's step: ``step(batch, iteration, diverged) -> (loss, terms)``,
    eager (:func:`training_step`) or captured in a CUDA graph (``train.cuda_graph``)."""
    if config.train.cuda_graph:
        return GraphedTrainingStep(model, forward_model, method, optimizer, config)

    def step(batch: TrainingBatch, iteration: int, diverged: Callable[..., Exception]):
        return training_step(model, forward_model, method, optimizer, scheduler, config, batch, iteration, diverged)

    return step
