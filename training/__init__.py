"""RestoreX training, data and evaluation tools (imports restorex_core, never ComfyUI).

Modules: ``data`` (``build_dataset``, ``PairedTransform``; classes in ``datasets``, ``stacks``,
``synthetic``), ``metrics`` (paper-protocol PSNR / SSIM), ``baselines`` (identity, gamma oracle,
auto-gamma, CLAHE, HE), ``evaluate`` (Table 1 style scoring, ``python -m training.evaluate``; the default
recipe's held-out suite in ``heldout``), ``curve_probe`` (how far a global tone curve picked from the priors
gets, ``python -m training.curve_probe``) and ``figures`` (the paper's Figure 6 / 7 analyses,
``python -m training.figures``).
"""
