"""Gradient attribution of a classifier built on the megfm encoder.

Three methods, all on :class:`~megfm.data.Windows`:

* :func:`gradient_x_input`: ``x * d logit / d x`` per sensor and sample;
* :func:`integrated_gradients`: ``(x - x0) * mean_alpha d logit / d x (x0 + alpha (x - x0))``
  along a straight path from a baseline ``x0`` (Sundararajan et al., 2017), seeded;
* :func:`grad_cam`: Grad-CAM on the encoder's latent tokens (Selvaraju et al., 2017, adapted
  to transformer tokens): feature-channel weights are the mean gradients over tokens, the
  token relevance is ``ReLU(sum_d w_d F[p, k, d])``, and it is mapped back to sensors
  through the spatial cross-attention, giving one value per sensor and time patch.

Each returns an :class:`Attribution` that aggregates to sensors, to time, and (for the
input-level methods) to frequency bands by splitting ``x - x0`` into band-limited parts
with an FFT mask: ``sum_t grad * band(x - x0)`` sums over a partition of bands to the total
attribution.

A classifier is any differentiable :class:`torch.nn.Module` mapping the batch tensors
``(x, pos, ori, sensor_type, sensor_mask)`` to logits ``(B, n_classes)``, most simply
:class:`EncoderClassifier` = pretrained model + :class:`LinearHead` on its pooled
embeddings (``LinearHead.from_sklearn`` turns a fitted scikit-learn logistic regression on
:func:`megfm.embed` embeddings into one).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..data.batch import Batch, iter_batches
from ..data.from_mne import as_windows
from ..data.geometry import SensorGeometry
from ..data.windows import Windows
from ..tokenize import BANDS
from ._common import _load_windows, _model_device, _split_attention, _union_geometry

__all__ = [
    "DEFAULT_BANDS",
    "Attribution",
    "EncoderClassifier",
    "LinearHead",
    "attribute",
    "grad_cam",
    "gradient_x_input",
    "integrated_gradients",
]

logger = logging.getLogger(__name__)

#: Frequency bands (Hz) used by :meth:`Attribution.to_bands` when none are given.
#: The bands of attribution maps: megfm's bands (:data:`megfm.tokenize.BANDS`), as a copy.
DEFAULT_BANDS: dict[str, tuple[float, float]] = dict(BANDS)
_METHODS = ("gradient_x_input", "integrated_gradients", "grad_cam")
_PATH_BATCH = 64  # windows x path points per forward pass of integrated gradients


# ---------------------------------------------------------------------- classifiers
class LinearHead(nn.Module):
    """Linear classifier on pooled embeddings: ``logits = features @ weight.T + bias``.

    Parameters
    ----------
    weight : array, shape (n_classes, n_features)
        Weights.
    bias : array, shape (n_classes,) | None
        Intercepts (zeros when None).
    classes : sequence | None
        Class labels, in logit order.
    """

    def __init__(self, weight, bias=None, classes: Sequence | None = None) -> None:
        super().__init__()
        w = torch.as_tensor(np.asarray(weight, dtype=np.float32))
        if w.ndim != 2:
            raise ValueError(f"'weight' must have shape (n_classes, n_features); got {tuple(w.shape)}.")
        b = torch.zeros(w.shape[0]) if bias is None else torch.as_tensor(
            np.asarray(bias, dtype=np.float32)).reshape(-1)
        if b.shape[0] != w.shape[0]:
            raise ValueError(f"'bias' has {b.shape[0]} entries; expected {w.shape[0]}.")
        self.linear = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(w)
            self.linear.bias.copy_(b)
        self.classes = None if classes is None else list(classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_classes)`` of pooled features ``(B, n_features)``."""
        return self.linear(features)

    @classmethod
    def from_sklearn(cls, estimator) -> LinearHead:
        """Convert a fitted linear scikit-learn classifier into a differentiable head.

        Accepts an estimator with ``coef_`` / ``intercept_`` (``LogisticRegression``,
        ``LinearSVC``, ``RidgeClassifier``, ...) or a ``Pipeline`` of ``StandardScaler``
        steps ending in one, whose scaling is folded into the weights. A binary classifier
        gets two logits ``[0, z]`` so that class index ``i`` is logit ``i``.

        Parameters
        ----------
        estimator : sklearn estimator | Pipeline
            Fitted on embeddings from the same model.

        Returns
        -------
        head : LinearHead
        """
        steps = list(getattr(estimator, "steps", [(None, estimator)]))
        final = steps[-1][1]
        if not hasattr(final, "coef_"):
            raise TypeError(
                f"{type(final).__name__} has no 'coef_': LinearHead.from_sklearn needs a fitted "
                "linear classifier (e.g. LogisticRegression), optionally after StandardScaler "
                "in a Pipeline. For another model, fine-tune a torch head instead."
            )
        coef = np.atleast_2d(np.asarray(final.coef_, dtype=np.float64))
        intercept = np.atleast_1d(np.asarray(getattr(final, "intercept_", 0.0), np.float64))
        intercept = np.broadcast_to(intercept, (coef.shape[0],)).copy()
        for name, step in reversed(steps[:-1]):
            if step is None or step == "passthrough":
                continue
            if not hasattr(step, "scale_") and not hasattr(step, "mean_"):
                raise TypeError(
                    f"Pipeline step {name!r} ({type(step).__name__}) cannot be folded into a "
                    "linear head; only StandardScaler steps are supported."
                )
            scale = getattr(step, "scale_", None)
            mean = getattr(step, "mean_", None)
            scale = np.ones(coef.shape[1]) if scale is None else np.asarray(scale, np.float64)
            mean = np.zeros(coef.shape[1]) if mean is None else np.asarray(mean, np.float64)
            coef = coef / scale
            intercept = intercept - coef @ mean
        if coef.shape[0] == 1:
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.array([0.0, intercept[0]])
        return cls(coef, intercept, classes=getattr(final, "classes_", None))


class EncoderClassifier(nn.Module):
    """Pretrained encoder + head: ``head(model.forward_head(model.forward_features(...)))``.

    Parameters
    ----------
    model : MaskedSignalModel
        Encoder with ``forward_features`` and ``forward_head`` (model contract).
    head : nn.Module
        Maps pooled features ``(B, D)`` to logits ``(B, n_classes)``, e.g.
        :class:`LinearHead`.
    """

    def __init__(self, model: nn.Module, head: nn.Module) -> None:
        super().__init__()
        _check_differentiable(head, what="head")
        self.model = model
        self.head = head

    def forward_tokens(self, x, pos, ori, sensor_type, sensor_mask):
        """Return ``(features (B, P, K, D), attention, logits (B, n_classes))``."""
        features, attention = _split_attention(self.model.forward_features(
            x, pos, ori, sensor_type, sensor_mask, return_attention=True))
        logits = self.head(self.model.forward_head(features, pre_logits=True))
        return features, attention, logits

    def forward(self, x, pos, ori, sensor_type, sensor_mask) -> torch.Tensor:
        """Logits ``(B, n_classes)``."""
        features = self.model.forward_features(x, pos, ori, sensor_type, sensor_mask)
        if isinstance(features, tuple):
            features = features[0]
        return self.head(self.model.forward_head(features, pre_logits=True))


def _check_differentiable(obj, *, what: str = "classifier") -> None:
    if isinstance(obj, nn.Module):
        return
    hint = ""
    if hasattr(obj, "predict") or hasattr(obj, "fit"):
        hint = (" It looks like a scikit-learn estimator, which has no gradients: wrap a fitted "
                "linear model with megfm.explain.LinearHead.from_sklearn(logreg) and use "
                "EncoderClassifier(model, head) (the linear-head path).")
    raise TypeError(
        f"The {what} must be a differentiable torch.nn.Module for gradient attribution; got "
        f"{type(obj).__name__}.{hint}"
    )


# ---------------------------------------------------------------------- result
@dataclass
class Attribution:
    """Attribution of a classifier's target logit to the input windows.

    Attributes
    ----------
    method : str
        ``"gradient_x_input"``, ``"integrated_gradients"`` or ``"grad_cam"``.
    values : array, shape (n_windows, n_sensors, n_times) | (n_windows, n_sensors, n_patches)
        Signed attribution per sensor and sample (per time patch for Grad-CAM, where it is
        non-negative). Rows of padding and bad sensors are zero.
    target : array of int, shape (n_windows,)
        Class index explained for each window.
    sfreq : float
        Sampling frequency of the windows (Hz).
    windows : Windows
        The explained windows (geometry and metadata).
    grad, delta : array, shape (n_windows, n_sensors, n_times) | None
        Path-averaged gradient and ``x - baseline`` (input-level methods), for
        :meth:`to_bands`.
    """

    method: str
    values: np.ndarray
    target: np.ndarray
    sfreq: float
    windows: Windows
    grad: np.ndarray | None = None
    delta: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def to_sensors(self) -> np.ndarray:
        """Absolute attribution summed over time, shape (n_windows, n_sensors)."""
        return np.abs(self.values).sum(axis=2)

    def to_time(self) -> np.ndarray:
        """Absolute attribution summed over sensors, shape (n_windows, n_times | n_patches)."""
        return np.abs(self.values).sum(axis=1)

    def to_bands(self, bands: Mapping[str, tuple[float, float]] | None = None
                 ) -> dict[str, np.ndarray]:
        """Attribution per frequency band, per window and sensor.

        ``sum_t grad[t] * band(x - x0)[t]``, where ``band`` keeps the FFT bins in
        ``[fmin, fmax)``: for bands that partition ``[0, sfreq / 2]`` the values add up to
        ``values.sum(axis=2)``.

        Parameters
        ----------
        bands : dict of str to (float, float) | None
            Band edges in Hz; :data:`DEFAULT_BANDS` when None.

        Returns
        -------
        bands : dict of str to array, shape (n_windows, n_sensors)
            Signed attribution per band.
        """
        if self.grad is None or self.delta is None:
            raise ValueError(
                f"Band attribution needs an input-level method; {self.method!r} works on "
                "latent tokens. Use method='gradient_x_input' or 'integrated_gradients'."
            )
        bands = DEFAULT_BANDS if bands is None else dict(bands)
        n_times = self.delta.shape[-1]
        freqs = np.fft.rfftfreq(n_times, 1.0 / self.sfreq)
        spec = np.fft.rfft(self.delta, axis=-1)
        out = {}
        for name, (fmin, fmax) in bands.items():
            if not 0 <= fmin < fmax:
                raise ValueError(f"Invalid band {name!r}: expected 0 <= fmin < fmax; got "
                                 f"({fmin}, {fmax}).")
            keep = (freqs >= fmin) & (freqs < fmax)
            part = np.fft.irfft(spec * keep, n=n_times, axis=-1)
            out[name] = (self.grad * part).sum(axis=-1)
        return out

    def sensor_map(self, mask: np.ndarray | None = None) -> tuple[np.ndarray, SensorGeometry]:
        """Mean absolute attribution per sensor over windows, normalised to sum 1.

        Parameters
        ----------
        mask : array of bool, shape (n_windows,) | None
            Windows to average (all when None).

        Returns
        -------
        weights : array, shape (n_sensors,)
            On the union of sensors of the windows' recordings (by name); NaN where absent.
        geometry : SensorGeometry
            The sensors of ``weights``.
        """
        w = self.windows
        sel = np.ones(w.n_windows, bool) if mask is None else np.asarray(mask, bool)
        if not sel.any():
            raise ValueError("No window selected for the sensor map.")
        union = _union_geometry(w.geometries)
        col = {n: i for i, n in enumerate(union.names)}
        total = np.zeros(union.n_sensors)
        count = np.zeros(union.n_sensors)
        per_sensor = self.to_sensors()
        for i in np.flatnonzero(sel):
            geom = w.geometries[int(w.metadata["recording"][i])]
            cols = np.array([col[n] for n in geom.names])
            valid = ~geom.bads
            total[cols[valid]] += per_sensor[i, :geom.n_sensors][valid]
            count[cols[valid]] += 1
        out = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        s = np.nansum(out)
        return (out / s if s > 0 else out), union


# ---------------------------------------------------------------------- methods
def _prepare(classifier, windows_or_store):
    _check_differentiable(classifier)
    windows = _load_windows(as_windows(windows_or_store, classifier))  # also mne.Epochs / Raw
    if windows.n_windows == 0:
        raise ValueError("No windows to explain: the Windows object is empty.")
    return windows, _model_device(classifier)


def _targets(target, logits: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    n_classes = logits.shape[1]
    if target is None:
        t = logits.argmax(dim=1)
    else:
        arr = np.asarray(target)
        t_np = np.full(len(idx), int(arr)) if arr.ndim == 0 else arr[idx].astype(np.int64)
        t = torch.as_tensor(t_np, device=logits.device)
    if torch.any((t < 0) | (t >= n_classes)):
        raise ValueError(f"Invalid value for 'target': class indices must lie in [0, {n_classes}).")
    return t


def _grad_wrt_input(classifier, x, tb: Batch, target, idx):
    x = x.detach().requires_grad_(True)
    logits = classifier(x, tb.pos, tb.ori, tb.sensor_type, tb.sensor_mask)
    if logits.ndim != 2:
        raise ValueError(f"The classifier must return logits (B, n_classes); got {tuple(logits.shape)}.")
    t = _targets(target, logits, idx)
    selected = logits.gather(1, t[:, None]).sum()
    (grad,) = torch.autograd.grad(selected, x)
    return grad, t, logits.detach()


def _forward(classifier, x, tb: Batch):
    with torch.no_grad():
        return classifier(x, tb.pos, tb.ori, tb.sensor_type, tb.sensor_mask)


def gradient_x_input(classifier: nn.Module, windows_or_store, *, target=None,
                     batch_size: int = 16) -> Attribution:
    """Gradient x input attribution of the target logit.

    Parameters
    ----------
    classifier : nn.Module
        Differentiable; ``classifier(x, pos, ori, sensor_type, sensor_mask)`` -> logits.
    windows_or_store : Windows | mne.Epochs | mne.io.Raw | path-like
        Windows to explain, or a store folder.
    target : int | array of int, shape (n_windows,) | None
        Class index to explain; the predicted class when None.
    batch_size : int
        Windows per pass.

    Returns
    -------
    attribution : Attribution
        ``values`` of shape (n_windows, n_sensors, n_times).
    """
    return _input_method(classifier, windows_or_store, target=target, batch_size=batch_size,
                         n_steps=1, baseline="zeros", seed=0, method="gradient_x_input")


def integrated_gradients(classifier: nn.Module, windows_or_store, *, target=None,
                         baseline: str | np.ndarray = "zeros", n_steps: int = 32,
                         seed: int = 0, batch_size: int = 8) -> Attribution:
    """Integrated gradients of the target logit along a straight path from a baseline.

    The path integral uses the midpoint rule with ``n_steps`` points, so
    ``values.sum()`` approaches ``logit(x) - logit(baseline)`` (completeness) as
    ``n_steps`` grows.

    Parameters
    ----------
    classifier : nn.Module
        Differentiable; ``classifier(x, pos, ori, sensor_type, sensor_mask)`` -> logits.
    windows_or_store : Windows | mne.Epochs | mne.io.Raw | path-like
        Windows to explain, or a store folder.
    target : int | array of int, shape (n_windows,) | None
        Class index to explain; the predicted class when None.
    baseline : ``"zeros"`` | ``"noise"`` | array, shape (n_sensors, n_times)
        ``"zeros"``: silence; ``"noise"``: Gaussian noise with each sensor's standard
        deviation (seeded by ``seed``); or an explicit baseline window.
    n_steps : int
        Points along the path.
    seed : int
        Seed of the noise baseline.
    batch_size : int
        Windows per pass.

    Returns
    -------
    attribution : Attribution
        ``values`` of shape (n_windows, n_sensors, n_times).
    """
    if int(n_steps) < 1:
        raise ValueError(f"'n_steps' must be a positive integer; got {n_steps!r}.")
    return _input_method(classifier, windows_or_store, target=target, batch_size=batch_size,
                         n_steps=int(n_steps), baseline=baseline, seed=seed,
                         method="integrated_gradients")


def _input_method(classifier, windows_or_store, *, target, batch_size, n_steps, baseline,
                  seed, method) -> Attribution:
    windows, device = _prepare(classifier, windows_or_store)
    rng = np.random.default_rng(seed)
    shape = windows.data.shape
    values = np.zeros(shape, np.float32)
    grads = np.zeros(shape, np.float32)
    deltas = np.zeros(shape, np.float32)
    targets = np.zeros(shape[0], np.int64)
    if isinstance(baseline, str) and baseline not in ("zeros", "noise"):
        raise ValueError(f"Invalid value for 'baseline': expected 'zeros', 'noise' or an array; "
                         f"got {baseline!r}.")
    was_training = classifier.training
    classifier.eval()
    try:
        for batch in iter_batches(windows, batch_size=batch_size):
            idx, tb = batch.index.numpy(), batch.to(device)
            x = tb.x
            valid = tb.sensor_mask[:, :, None].to(x.dtype)
            if method == "gradient_x_input" or (isinstance(baseline, str) and baseline == "zeros"):
                x0 = torch.zeros_like(x)
            elif isinstance(baseline, str):
                std = batch.x.numpy().std(axis=-1, keepdims=True)
                x0 = torch.as_tensor(rng.standard_normal(batch.x.shape).astype(np.float32)
                                     * std, device=device)
            else:
                b = np.asarray(baseline, np.float32)
                if b.shape != tuple(x.shape[1:]):
                    raise ValueError(f"'baseline' must have shape {tuple(x.shape[1:])}; got {b.shape}.")
                x0 = torch.as_tensor(b, device=device).expand_as(x)
            x0 = x0 * valid
            delta = (x - x0).detach()
            alphas = ([1.0] if method == "gradient_x_input"
                      else [(k + 0.5) / n_steps for k in range(n_steps)])
            b = x.shape[0]
            per_pass = max(1, _PATH_BATCH // b)  # several path points in one forward pass
            total = torch.zeros_like(x)
            t = _targets(target, _forward(classifier, x, tb), idx)  # explained class per window
            for start in range(0, len(alphas), per_pass):
                a = torch.as_tensor(alphas[start:start + per_pass], dtype=x.dtype,
                                    device=x.device)
                n_a = len(a)
                path = (x0[None] + a[:, None, None, None] * delta[None]).reshape(-1, *x.shape[1:])
                rep = tb.replace(**{k: getattr(tb, k).repeat(n_a, *[1] * (getattr(tb, k).ndim - 1))
                                    for k in ("pos", "ori", "sensor_type", "sensor_mask")})
                path_t = t.repeat(n_a).cpu().numpy()
                grad, _, _ = _grad_wrt_input(classifier, path, rep, path_t, np.arange(n_a * b))
                total += grad.reshape(n_a, *x.shape).sum(0)
            avg = (total / n_steps) * valid
            grads[idx] = avg.cpu().numpy()
            deltas[idx] = delta.cpu().numpy()
            values[idx] = grads[idx] * deltas[idx]
            targets[idx] = t.cpu().numpy()
    finally:
        classifier.train(was_training)
    return Attribution(method=method, values=values, target=targets, sfreq=windows.sfreq,
                       windows=windows, grad=grads, delta=deltas,
                       info={"n_steps": n_steps, "seed": seed,
                             "baseline": baseline if isinstance(baseline, str) else "array"})


def grad_cam(classifier: nn.Module, windows_or_store, *, target=None,
             batch_size: int = 16) -> Attribution:
    """Grad-CAM on the encoder's latent tokens, mapped to sensors and time patches.

    For latents ``F`` (B, P, K, D) and the gradient ``G`` of the target logit, channel
    weights are ``w_d = mean_{p,k} G[p, k, d]``, token relevance
    ``cam[p, k] = ReLU(sum_d w_d F[p, k, d])``, and the sensor map
    ``sum_k cam[p, k] * spatial[p, k, s]``.

    Parameters
    ----------
    classifier : EncoderClassifier | nn.Module
        Must expose ``forward_tokens(x, pos, ori, sensor_type, sensor_mask) -> (features,
        attention, logits)`` (as :class:`EncoderClassifier` does).
    windows_or_store : Windows | mne.Epochs | mne.io.Raw | path-like
        Windows to explain, or a store folder.
    target : int | array of int, shape (n_windows,) | None
        Class index to explain; the predicted class when None.
    batch_size : int
        Windows per pass.

    Returns
    -------
    attribution : Attribution
        ``values`` of shape (n_windows, n_sensors, n_patches), non-negative.
    """
    windows, device = _prepare(classifier, windows_or_store)
    if not hasattr(classifier, "forward_tokens"):
        raise TypeError(
            f"Grad-CAM needs the encoder's tokens; {type(classifier).__name__} has no "
            "forward_tokens(). Wrap the model as EncoderClassifier(model, head), or use "
            "method='gradient_x_input' / 'integrated_gradients'."
        )
    chunks, targets = [], np.zeros(windows.n_windows, np.int64)
    was_training = classifier.training
    classifier.eval()
    try:
        for batch in iter_batches(windows, batch_size=batch_size):
            idx, tb = batch.index.numpy(), batch.to(device)
            tb.x.requires_grad_(True)  # so the latents carry gradients with a frozen encoder
            features, attention, logits = classifier.forward_tokens(
                tb.x, tb.pos, tb.ori, tb.sensor_type, tb.sensor_mask)
            t = _targets(target, logits, idx)
            selected = logits.gather(1, t[:, None]).sum()
            (grad,) = torch.autograd.grad(selected, features)
            weights = grad.mean(dim=(1, 2), keepdim=True)  # (B, 1, 1, D)
            cam = torch.relu((weights * features).sum(-1))  # (B, P, K)
            spatial = attention["spatial"]  # (B, P, K, S)
            sensor_cam = torch.einsum("bpk,bpks->bsp", cam, spatial)
            chunks.append((idx, sensor_cam.detach().cpu().numpy()))
            targets[idx] = t.cpu().numpy()
    finally:
        classifier.train(was_training)
    n_patches = chunks[0][1].shape[2]
    values = np.zeros((windows.n_windows, windows.data.shape[1], n_patches), np.float32)
    for idx, v in chunks:
        values[idx, :v.shape[1]] = v
    return Attribution(method="grad_cam", values=values, target=targets,
                       sfreq=windows.sfreq, windows=windows,
                       info={"patch_seconds": windows.n_times / n_patches / windows.sfreq})


def attribute(classifier, windows_or_store, *, method: str = "integrated_gradients",
              **kwargs) -> Attribution:
    """Attribute a classifier's decision with one of the gradient methods.

    Parameters
    ----------
    classifier : nn.Module
        Differentiable classifier (see :class:`EncoderClassifier`). A scikit-learn
        estimator raises a TypeError that points to :meth:`LinearHead.from_sklearn`.
    windows_or_store : Windows | mne.Epochs | mne.io.Raw | path-like
        Windows to explain, or a store folder.
    method : ``"integrated_gradients"`` | ``"gradient_x_input"`` | ``"grad_cam"``
        The method.
    **kwargs
        Passed to the method's function.

    Returns
    -------
    attribution : Attribution
    """
    funcs = {"gradient_x_input": gradient_x_input, "integrated_gradients": integrated_gradients,
             "grad_cam": grad_cam}
    if method not in funcs:
        raise ValueError(f"Invalid value for 'method': expected one of {_METHODS}; got {method!r}.")
    return funcs[method](classifier, windows_or_store, **kwargs)
