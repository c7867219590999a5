"""RestoreX training, data and evaluation tools (imports restorex_core, never ComfyUI).

Modules: ``data`` (``build_dataset``, ``PairedTransform``; classes in ``datasets``, ``stacks``,
``synthetic``), ``metrics`` (paper-protocol PSNR / SSIM), ``baselines`` (identity, gamma oracle,
auto-gamma, CLAHE, HE), ``evaluate`` (Table 1 style scoring, ``python -m training.evaluate``) and
``figures`` (the paper's Figure 6 / 7 analyses, ``python -m training.figures``).
"""
