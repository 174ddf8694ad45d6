"""OPTML-Group "MIA-Efficacy": a confidence-based membership-inference attack on the forget set.

Reference: OPTML-Group/Unlearn-Saliency ``Classification/evaluation/SVC_MIA.py`` (``SVC_MIA`` with
``target_train=None``, ``target_test=forget``) as called from ``main_random.py``:

* feature: softmax probability of the true label (:func:`true_class_confidence`), model in eval
  mode with test-time transforms;
* attack training set: members (label 1) = the first ``len(test)`` rows of the retain set in
  dataset order, non-members (label 0) = the whole test set;
* classifier: ``sklearn.svm.SVC(C=3, gamma="auto", kernel="rbf")``;
* MIA-Efficacy = fraction of forget rows predicted non-member, ``TN / |D_f|``. Higher means more
  forgetting; compare with the retrained model's value (which is not 1). The papers report it
  in percent.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from lightning_unlearn.metrics._svc import GammaType, _as_2d, _check_svc_args, fit_rbf_svc

Backend = Literal["torch", "sklearn"]
_BACKENDS = ("torch", "sklearn")


def true_class_confidence(logits: Tensor, target: Tensor) -> Tensor:
    """Softmax probability of the true class, ``softmax(logits)[i, target[i]]``.

    Computed as ``exp(log_softmax(logits)[i, target[i]])`` in float32 (float64 stays float64), so
    bf16/fp16 logits give the same features as float32 ones.

    Args:
        logits: ``(N, C)`` unnormalised scores, any floating dtype.
        target: ``(N,)`` integer labels in ``[0, C)``.

    Returns:
        ``(N,)`` float32 (or float64) tensor in ``[0, 1]`` on the device of ``logits``.

    Raises:
        ValueError: on wrong shapes or dtypes, or labels outside ``[0, C)``.

    Example:
        >>> import torch
        >>> true_class_confidence(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([1, 0]))
        tensor([0.5000, 0.8808])
    """
    if not isinstance(logits, Tensor) or logits.ndim != 2 or not logits.is_floating_point():
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"`logits` must be a floating (N, C) tensor, got {shape}.")
    if not isinstance(target, Tensor) or target.ndim != 1 or target.is_floating_point() or target.dtype == torch.bool:
        raise ValueError("`target` must be an integer (N,) tensor of class labels; use `target.long()`.")
    if target.shape[0] != logits.shape[0]:
        raise ValueError(
            f"`logits` and `target` must have the same number of samples, got {logits.shape[0]} and {target.shape[0]}."
        )
    target = target.to(logits.device)
    if target.numel() > 0 and bool((target < 0).any() | (target >= logits.shape[1]).any()):
        num_classes = logits.shape[1]
        raise ValueError(f"`target` labels must lie in [0, {num_classes}) for `logits` with {num_classes} classes.")
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    log_probs = torch.log_softmax(logits.to(dtype), dim=1)
    return log_probs.gather(1, target.long().unsqueeze(1)).squeeze(1).exp()


def _check_mia_args(backend: str, C: float, gamma: GammaType) -> None:
    if backend not in _BACKENDS:
        raise ValueError(f"`backend` must be one of {_BACKENDS}, got {backend!r}.")
    _check_svc_args(C, gamma)


def _mia_efficacy_update(
    retain_features: Tensor, test_features: Tensor, forget_features: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Validate the features and build the attack's training set.

    Args:
        retain_features: ``(N_r,)`` or ``(N_r, d)``; only the first ``N_t`` rows are used.
        test_features: ``(N_t,)`` or ``(N_t, d)``.
        forget_features: ``(N_f,)`` or ``(N_f, d)``.

    Returns:
        ``(x_attack, y_attack, x_forget)``: members (label 1) then non-members (label 0), and the
        forget features, all 2-D.

    Raises:
        ValueError: on empty inputs, mismatched feature dimensions or devices.
    """
    named = {"retain_features": retain_features, "test_features": test_features, "forget_features": forget_features}
    feats = {}
    for name, value in named.items():
        value = _as_2d(value, name)
        if value.shape[0] == 0:
            raise ValueError(f"`{name}` is empty; MIA-Efficacy needs retain, test and forget samples.")
        feats[name] = value
    dims = {name: value.shape[1] for name, value in feats.items()}
    if len(set(dims.values())) != 1:
        raise ValueError(f"feature dimensions differ: {dims}; pass the same features for every split.")
    devices = {name: str(value.device) for name, value in feats.items()}
    if len(set(devices.values())) != 1:
        raise ValueError(f"features are on different devices: {devices}; move them to one device.")
    retain, test = feats["retain_features"], feats["test_features"]
    members = retain[: test.shape[0]]
    x_attack = torch.cat([members, test.to(members.dtype)])
    y_attack = torch.cat(
        [
            torch.ones(members.shape[0], dtype=torch.long, device=members.device),
            torch.zeros(test.shape[0], dtype=torch.long, device=members.device),
        ]
    )
    return x_attack, y_attack, feats["forget_features"]


def _mia_efficacy_compute(
    x_attack: Tensor,
    y_attack: Tensor,
    x_forget: Tensor,
    backend: Backend = "torch",
    C: float = 3.0,
    gamma: GammaType = "auto",
) -> Tensor:
    """Fit the attack on ``(x_attack, y_attack)`` and return the non-member rate on ``x_forget``."""
    if backend == "sklearn":
        from sklearn.svm import SVC  # optional heavy import, CPU only

        clf = SVC(C=C, gamma=gamma, kernel="rbf")
        clf.fit(x_attack.detach().cpu().double().numpy(), y_attack.detach().cpu().numpy())
        pred = clf.predict(x_forget.detach().cpu().double().numpy())
        non_member = torch.from_numpy(pred == 0)
    else:
        svc = fit_rbf_svc(x_attack, y_attack, C=C, gamma=gamma)
        non_member = svc.predict(x_forget) == 0
    return non_member.to(device=x_forget.device, dtype=torch.float32).mean()


def mia_efficacy(
    retain_features: Tensor,
    test_features: Tensor,
    forget_features: Tensor,
    *,
    backend: Backend = "torch",
    C: float = 3.0,
    gamma: GammaType = "auto",
) -> Tensor:
    """OPTML "MIA-Efficacy": fraction of forget samples an RBF-SVC attack calls non-members.

    The attack is trained on members = the first ``len(test_features)`` rows of
    ``retain_features`` (all of them if fewer; keep dataset order) and non-members = all of
    ``test_features``, exactly as ``SVC_MIA.py`` of OPTML-Group/Unlearn-Saliency.

    Args:
        retain_features: ``(N_r,)`` or ``(N_r, d)`` attack features of retain samples, e.g.
            :func:`true_class_confidence`.
        test_features: ``(N_t,)`` or ``(N_t, d)`` features of held-out test samples.
        forget_features: ``(N_f,)`` or ``(N_f, d)`` features of the forget set.
        backend: ``"torch"`` (default): the native solver :func:`fit_rbf_svc` on the inputs'
            device, which agrees with scikit-learn to within 0.01 of efficacy (usually exactly);
            ``"sklearn"``: ``sklearn.svm.SVC`` on CPU, bit-for-bit the OPTML protocol but slow for
            large test sets (about 5 s for 10,000 + 10,000 overlapping confidences).
        C: SVC ``C`` (OPTML: 3).
        gamma: SVC ``gamma``: ``"auto"`` (OPTML, ``1 / d``), ``"scale"`` or a positive number.

    Returns:
        0-d float32 tensor in ``[0, 1]`` on the device of ``forget_features``; higher means more
        forgetting (compare with the retrained model).

    Raises:
        ValueError: on empty inputs, mismatched feature dimensions or devices, ``C <= 0``, an
            invalid ``gamma`` or an unknown ``backend``.

    Example:
        >>> import torch
        >>> retain = torch.tensor([0.99, 0.98, 0.97, 0.99, 0.96, 0.98])
        >>> test = torch.tensor([0.30, 0.50, 0.40, 0.35, 0.45, 0.55])
        >>> mia_efficacy(retain, test, torch.tensor([0.99, 0.40]))
        tensor(0.5000)
    """
    _check_mia_args(backend, C, gamma)
    x_attack, y_attack, x_forget = _mia_efficacy_update(retain_features, test_features, forget_features)
    return _mia_efficacy_compute(x_attack, y_attack, x_forget, backend=backend, C=C, gamma=gamma)
