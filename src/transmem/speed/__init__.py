"""``transmem speed``: training-step and inference speed, memory and efficiency, with ratios.

Measures, in one run and on this machine, for the small configuration (ConvLSTM 2 x 32,
3x3 kernels) and the paper's (4 x 64, 5x5), both with batch 8, 64x64 frames, patch 4 and
10 + 10 frames:

- training step time of the plain ConvLSTM, of a TMU target with a *live* memory bank (2
  frozen sources re-run every step) and with a *cached* bank (the sources' memories read
  from float16 memory-mapped files, :class:`~transmem.transfer.memory_bank.CachedMemoryBank`);
- inference throughput (sequences per second) of the backbone and of the TMU target, which
  needs no source at inference;
- peak memory of each training variant: resident memory on the CPU, each in a fresh
  process; GPU memory allocated by torch on CUDA, in this process (what it held before
  not counted);
- achieved GFLOP/s of the whole training step next to the GFLOP/s of the same convolutions
  run alone at the same shapes (the machine's practical ceiling);
- the ratios behind the speed targets, each marked PASS or FAIL.

The step is the training loop's (:func:`transmem.training.step.training_step`, or
:mod:`transmem.training.cuda_graph`'s with ``--cuda-graph``): the transfer method
builds the model, prepares its bank and adds its loss terms exactly as in training; the
sources are random-init networks of the target's architecture (their weights do not change
the cost) and the training sequences are random frames held in memory (no data generation
in the timed step, the same for every variant). Times are medians after warm-up with the
inter-quartile range; variants are timed in interleaved rounds so that a machine whose load
drifts affects them alike. No number is asserted by the tests: re-run on a quiet machine.

The modules, bottom-up:

- :mod:`~transmem.speed.configs`: the configurations measured (:class:`SpeedConfig`);
- :mod:`~transmem.speed.timing`: medians and quartiles of interleaved, synchronised calls;
- :mod:`~transmem.speed.flops`: the convolutions of a training step and their FLOPs;
- :mod:`~transmem.speed.workload`: the timed training step and inference;
- :mod:`~transmem.speed.peak_memory`: peak memory, one process per variant;
- :mod:`~transmem.speed.sharing`: two trainings side by side (``--shared-machine``);
- :mod:`~transmem.speed.request`: :class:`SpeedRequest`, the command's options, checked;
- :mod:`~transmem.speed.options`: the fast-path options timed against float32 eager;
- :mod:`~transmem.speed.checks` and :mod:`~transmem.speed.table`: the targets and the table;
- :mod:`~transmem.speed.measure`: :func:`measure_speed`, one request measured and printed.

The transfer benchmark's time estimate times its runs' steps with ``configs``, ``timing``
and ``workload``; nothing here imports the benchmark. Nothing is imported here, so that
importing a module of the package loads only what that module needs.
"""
