"""The distillation lifecycle (STYLE.md practice 5) and its verbs.

``Distiller(teacher, student, config)`` freezes the teacher (requires_grad False, eval mode on every step),
puts forward hooks on the paired layers and sizes the adaptation layers with one probe forward; the caller
trains ``.model`` with ``.loss_fn`` (``training.fit(distiller.model, data, loss_fn=distiller.loss_fn)``);
``.finalize()`` removes the hooks, restores the teacher's flags and returns the student. Used as a context
manager, or through ``distill``, the hooks are removed even when training raises.

Why ``.model`` and not always the student: ``training.fit`` builds its optimizer from ``model.parameters()``,
so adaptation layers that live outside the trained module would never learn. When a feature pair needs one,
``.model`` is a ``DistillationModule`` holding the student and the adapters (its forward is the student's);
otherwise it is the student itself. ``loss_fn`` refuses the bare student when adapters exist, rather than
silently leaving them at their random initialisation."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..errors import DataError, EdgeCompressError, RecipeError, UnsupportedError
from ..layers import matches
from .config import DistillConfig
from .losses import attention_loss, feature_loss, kd_loss

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor | None], torch.Tensor]
TrainFn = Callable[[nn.Module, LossFn], object]
# Layers whose 3-D outputs are tokens (B, T, D): transformers' Linear / LayerNorm / attention / embeddings.
_TOKEN_LAYERS = (nn.Linear, nn.LayerNorm, nn.MultiheadAttention, nn.Embedding)
_POOL = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d}
_CONV = {1: nn.Conv1d, 2: nn.Conv2d}


class TokenPool(nn.Module):
    """Adaptive average pooling of (B, T, D) tokens along T to ``length`` tokens."""

    def __init__(self, length: int) -> None:
        super().__init__()
        self.length = length

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool1d(x.transpose(1, 2), self.length).transpose(1, 2)


class DistillationModule(nn.Module):
    """The module to train when adaptation layers exist: the student plus the adapters, so that an optimizer
    built from ``parameters()`` trains both. Its forward is the student's; the teacher is not part of it."""

    def __init__(self, student: nn.Module, adapters: nn.ModuleDict) -> None:
        super().__init__()
        self.student = student
        self.adapters = adapters

    def forward(self, *args, **kwargs):
        return self.student(*args, **kwargs)


class Distiller:
    """Knowledge distillation from ``teacher`` into ``student`` (both nn.Modules, not sharing parameters).

    ``example_inputs`` (default: the student's or the teacher's ``example_inputs()``) feed the one probe
    forward that sizes the adaptation layers; only needed when ``config`` has feature or attention pairs."""

    def __init__(self, teacher: nn.Module, student: nn.Module, config: DistillConfig | None = None, *,
                 example_inputs: tuple[torch.Tensor, ...] | None = None) -> None:
        _check_models(teacher, student)
        self.config = config if config is not None else DistillConfig()
        if not isinstance(self.config, DistillConfig):
            raise RecipeError(f"config must be a DistillConfig, got {type(self.config).__name__}")
        self.teacher, self.student = teacher, student
        self.closed = False
        self.last_losses: dict[str, float] = {}
        self._armed = False
        self._captured: dict[str, dict[str, torch.Tensor]] = {"student": {}, "teacher": {}}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._teacher_state = (teacher.training, [(p, p.requires_grad) for p in teacher.parameters()])
        teacher.eval()
        teacher.requires_grad_(False)
        self.adapters = nn.ModuleDict()
        try:
            self.feature_pairs = _resolve(student, teacher, self.config.feature_pairs, "feature_pairs")
            self.attention_pairs = _resolve(student, teacher, self.config.attention_pairs, "attention_pairs")
            self._hook_layers()
            self._layouts: dict[tuple[str, str], str] = {}
            if self.feature_pairs or self.attention_pairs:
                self._build_adapters(example_inputs)
        except BaseException:
            self.close()  # hooks already placed must not outlive a failed start
            raise
        self.model: nn.Module = DistillationModule(student, self.adapters) if len(self.adapters) else student

    # --- lifecycle ------------------------------------------------------------------------------------

    def parameters(self) -> list[nn.Parameter]:
        """Everything to train: the student's parameters and the adaptation layers'."""
        return list(self.student.parameters()) + list(self.adapters.parameters())

    def loss_fn(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """``training.fit``'s loss_fn(model, x, y): response KD plus the feature and attention terms.
        ``model`` must be ``self.model`` (the bare student is accepted when there are no adapters)."""
        self._check_usable(model)
        cfg = self.config
        if y is None and cfg.alpha == 0 and not self.feature_pairs and not self.attention_pairs:
            raise RecipeError("without labels, alpha=0 and no feature or attention pairs leave nothing to learn; "
                              "raise alpha above 0 or add pairs")
        self.teacher.eval()  # whatever the caller did to modes since the last step
        captured_s, captured_t = self._captured["student"], self._captured["teacher"]
        captured_s.clear()
        captured_t.clear()
        self._armed = True
        try:
            with torch.no_grad():
                teacher_logits = self.teacher(x)
            student_logits = model(x)
        finally:
            self._armed = False
        loss = kd_loss(student_logits, teacher_logits, y, temperature=cfg.temperature, alpha=cfg.alpha,
                       beta=cfg.beta)
        parts = {"kd": loss.item()}
        if self.feature_pairs:
            features = sum(self._feature_term(i, s, t) for i, (s, t) in enumerate(self.feature_pairs))
            parts["feature"] = features.item()
            loss = loss + cfg.feature_weight * features
        if self.attention_pairs:
            attention = sum(attention_loss(self._get("student", s), self._get("teacher", t), p=cfg.attention_p,
                                           channels_last=self._layouts[s, t] == "channels_last")
                            for s, t in self.attention_pairs)
            parts["attention"] = attention.item()
            loss = loss + cfg.attention_weight * attention
        captured_s.clear()
        captured_t.clear()
        self.last_losses = parts
        return loss

    def finalize(self) -> nn.Module:
        """Remove the hooks, give the teacher back its modes and requires_grad flags; return the student."""
        self.close()
        return self.student

    def close(self) -> None:
        """Like finalize, without returning; safe to call more than once."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._captured["student"].clear()
        self._captured["teacher"].clear()
        if not self.closed:
            training, flags = self._teacher_state
            for p, flag in flags:
                p.requires_grad_(flag)
            self.teacher.train(training)
        self.closed = True

    def __enter__(self) -> Distiller:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- internals ------------------------------------------------------------------------------------

    def _check_usable(self, model: nn.Module) -> None:
        if self.closed:
            raise EdgeCompressError("this Distiller is finalized: its hooks are gone, so its loss_fn cannot be "
                                    "used any more; create a new Distiller")
        if model is self.model:
            return
        if model is self.student:
            raise RecipeError("the student has adaptation layers that must be trained with it: train "
                              "distiller.model (a DistillationModule holding student and adapters) instead of the "
                              "student alone")
        raise RecipeError(f"loss_fn got a {type(model).__name__} that is neither the distiller's student nor "
                          "distiller.model; train distiller.model")

    def _hook_layers(self) -> None:
        pairs = self.feature_pairs + self.attention_pairs
        for side, model, names in (("student", self.student, {s for s, _ in pairs}),
                                   ("teacher", self.teacher, {t for _, t in pairs})):
            for name in sorted(names):
                module = model.get_submodule(name)
                self._handles.append(module.register_forward_hook(self._hook(side, name)))

    def _hook(self, side: str, name: str):
        store = self._captured[side]

        def capture(module: nn.Module, args, output) -> None:
            if not self._armed:  # evaluation and other forwards outside loss_fn are not recorded
                return
            if not isinstance(output, torch.Tensor):
                raise UnsupportedError(f"layer {name!r} of the {side} returns {type(output).__name__}, not a tensor; "
                                       "pair layers whose output is a single tensor")
            if name in store:
                raise UnsupportedError(f"layer {name!r} of the {side} runs more than once per forward (a shared "
                                       "module); pair a layer that runs once")
            store[name] = output

        return capture

    def _get(self, side: str, name: str) -> torch.Tensor:
        try:
            return self._captured[side][name]
        except KeyError:
            raise DataError(f"layer {name!r} of the {side} did not run in this forward pass, so it cannot be "
                            "distilled; pair layers that every forward runs") from None

    def _feature_term(self, index: int, s: str, t: str) -> torch.Tensor:
        student = self._get("student", s)
        key = f"feature{index}"
        if key in self.adapters:
            student = self.adapters[key](student)
        return feature_loss(student, self._get("teacher", t), kind=self.config.feature_loss)

    def _build_adapters(self, example_inputs: tuple[torch.Tensor, ...] | None) -> None:
        """One probe forward in eval mode gives each paired layer's shape and layout; feature pairs whose
        shapes differ get an adapter, created now so that an optimizer built next includes it."""
        inputs = _example_inputs(example_inputs, self.student, self.teacher)
        was_training = self.student.training
        self.student.eval()
        self._armed = True
        try:
            with torch.no_grad():
                self.teacher(*inputs)
                self.student(*inputs)
        except EdgeCompressError:
            raise
        except Exception as e:
            shapes = [tuple(t.shape) for t in inputs]
            raise DataError(f"the probe forward on example inputs of shapes {shapes} failed: {e}") from None
        finally:
            self._armed = False
            self.student.train(was_training)
        device = next((p.device for p in self.student.parameters()), torch.device("cpu"))
        for i, (s, t) in enumerate(self.feature_pairs):
            s_feat, t_feat = self._get("student", s), self._get("teacher", t)
            layout = self._layout(s, t, s_feat, t_feat)
            adapter = make_adapter(tuple(s_feat.shape[1:]), tuple(t_feat.shape[1:]), layout, pair=(s, t))
            if adapter is not None:
                self.adapters[f"feature{i}"] = adapter.to(device)
        for s, t in self.attention_pairs:
            self._layout(s, t, self._get("student", s), self._get("teacher", t))
        self._captured["student"].clear()
        self._captured["teacher"].clear()

    def _layout(self, s: str, t: str, s_feat: torch.Tensor, t_feat: torch.Tensor) -> str:
        setting = self.config.feature_layout
        s_layout = feature_layout(self.student.get_submodule(s), s_feat, setting)
        t_layout = feature_layout(self.teacher.get_submodule(t), t_feat, setting)
        if s_layout != t_layout:
            raise RecipeError(f"pair ({s!r}, {t!r}): the student's feature {tuple(s_feat.shape)} reads as "
                              f"{s_layout} but the teacher's {tuple(t_feat.shape)} as {t_layout}; pair layers of "
                              "the same kind or set feature_layout to 'channels_first' or 'channels_last'")
        self._layouts[s, t] = s_layout
        return s_layout


def feature_layout(module: nn.Module, feature: torch.Tensor, setting: str = "auto") -> str:
    """"vector" for (B, D); "channels_first" for (B, C, H, W); for (B, ·, ·): ``setting`` unless "auto",
    then "channels_last" when ``module`` is, or its last submodule with parameters is, a Linear, LayerNorm,
    MultiheadAttention or Embedding, else "channels_first". A parameter-free layer (an activation) in a
    transformer reads as channels-first: set feature_layout="channels_last" for those."""
    if feature.dim() == 2:
        return "vector"
    if feature.dim() != 3:
        return "channels_first"
    if setting != "auto":
        return setting
    last = module
    for sub in module.modules():
        if next(sub.parameters(recurse=False), None) is not None:
            last = sub
    return "channels_last" if isinstance(last, _TOKEN_LAYERS) else "channels_first"


def make_adapter(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...], layout: str, *,
                 pair: tuple[str, str] = ("student", "teacher")) -> nn.Module | None:
    """The layer mapping a student feature (shape without the batch) onto the teacher's, or None when the
    shapes agree: Linear for vectors and tokens' width, 1×1 conv for channels, adaptive average pooling to
    the teacher's length / size."""
    if student_shape == teacher_shape:
        return None
    if len(student_shape) != len(teacher_shape):
        raise UnsupportedError(f"pair {pair}: the student's feature {student_shape} and the teacher's "
                               f"{teacher_shape} (without the batch) differ in rank; pair layers of the same kind")
    layers: list[nn.Module] = []
    if layout == "vector":
        layers.append(nn.Linear(student_shape[0], teacher_shape[0]))
    elif layout == "channels_last":
        if student_shape[0] != teacher_shape[0]:
            layers.append(TokenPool(teacher_shape[0]))
        if student_shape[1] != teacher_shape[1]:
            layers.append(nn.Linear(student_shape[1], teacher_shape[1]))
    else:
        spatial = len(teacher_shape) - 1
        if spatial not in _POOL:
            raise UnsupportedError(f"pair {pair}: adaptation layers cover 1-D and 2-D channel-first features, got "
                                   f"{spatial} spatial dimensions in {teacher_shape}")
        if student_shape[1:] != teacher_shape[1:]:
            layers.append(_POOL[spatial](teacher_shape[1:]))
        if student_shape[0] != teacher_shape[0]:
            layers.append(_CONV[spatial](student_shape[0], teacher_shape[0], 1))
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


def distill(teacher: nn.Module, student: nn.Module, train_fn: TrainFn, config: DistillConfig | None = None, *,
            example_inputs: tuple[torch.Tensor, ...] | None = None) -> nn.Module:
    """Train ``student`` from ``teacher`` with the caller's loop and return it. ``train_fn(model, loss_fn)``
    trains ``model`` (the student, or a DistillationModule of student + adapters) with ``loss_fn`` — e.g.
    ``lambda m, loss: fit(m, data, epochs=5, loss_fn=loss)``. Hooks are removed even if it raises."""
    with Distiller(teacher, student, config, example_inputs=example_inputs) as distiller:
        train_fn(distiller.model, distiller.loss_fn)
        return distiller.finalize()


def distill_progressive(teacher: nn.Module, students: Sequence[nn.Module], train_fn: TrainFn,
                        config: DistillConfig | Sequence[DistillConfig] | None = None, *,
                        example_inputs: tuple[torch.Tensor, ...] | None = None) -> nn.Module:
    """Teacher → assistant(s) → student (Mirzadeh et al., 2020, TAKD): each model in ``students`` is
    distilled from the one before it (the first from ``teacher``), in place, with ``train_fn`` as in
    ``distill``. ``config`` is one DistillConfig for every stage or one per stage (layer names differ
    between architectures). Returns the last student."""
    students = list(students)
    if not students:
        raise RecipeError("distill_progressive needs at least one student, got an empty list")
    if len({id(m) for m in [teacher, *students]}) != len(students) + 1:
        raise RecipeError("each stage of progressive distillation needs its own model; the teacher and the "
                          "students must be distinct modules")
    if config is None or isinstance(config, DistillConfig):
        configs = [config] * len(students)
    else:
        configs = list(config)
        if len(configs) != len(students):
            raise RecipeError(f"give one DistillConfig or one per stage: {len(students)} stages, "
                              f"{len(configs)} configs")
    current = teacher
    for student, stage_config in zip(students, configs, strict=True):
        current = distill(current, student, train_fn, stage_config, example_inputs=example_inputs)
    return current


def _check_models(teacher: nn.Module, student: nn.Module) -> None:
    for role, model in (("teacher", teacher), ("student", student)):
        if not isinstance(model, nn.Module):
            raise RecipeError(f"the {role} must be a torch.nn.Module, got {type(model).__name__}")
    if teacher is student:
        raise RecipeError("the teacher and the student are the same module; distil into a separate student "
                          "(e.g. make_student(teacher))")
    shared = {id(p) for p in teacher.parameters()} & {id(p) for p in student.parameters()}
    if shared:
        raise RecipeError(f"the teacher and the student share {len(shared)} parameter tensors; freezing the "
                          "teacher would freeze them in the student too. Give the student its own copy")


def _resolve(student: nn.Module, teacher: nn.Module, pairs: tuple[tuple[str, str], ...], where: str
             ) -> list[tuple[str, str]]:
    """Expand (student_pattern, teacher_pattern) pairs into (student_layer, teacher_layer) names: each side
    must match at least one layer, and the same number as the other, paired in module order."""
    s_names = [n for n, _ in student.named_modules() if n]
    t_names = [n for n, _ in teacher.named_modules() if n]
    out: list[tuple[str, str]] = []
    for i, (s_pattern, t_pattern) in enumerate(pairs):
        s_found = [n for n in s_names if matches(n, (s_pattern,))]
        t_found = [n for n in t_names if matches(n, (t_pattern,))]
        for side, pattern, found, names in (("student", s_pattern, s_found, s_names),
                                            ("teacher", t_pattern, t_found, t_names)):
            if not found:
                raise RecipeError(f"{where}[{i}]: {pattern!r} matches no layer of the {side}; its layers: "
                                  f"{_preview(names)}")
        if len(s_found) != len(t_found):
            raise RecipeError(f"{where}[{i}]: {s_pattern!r} matches {len(s_found)} student layers "
                              f"({_preview(s_found)}) but {t_pattern!r} matches {len(t_found)} teacher layers "
                              f"({_preview(t_found)}); a pair must match as many layers on each side")
        out.extend(zip(s_found, t_found, strict=True))
    return out


def _preview(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")


def _example_inputs(given: tuple[torch.Tensor, ...] | None, *models: nn.Module) -> tuple[torch.Tensor, ...]:
    if given is not None:
        return tuple(given) if isinstance(given, (tuple, list)) else (given,)
    for model in models:
        if callable(getattr(model, "example_inputs", None)):
            return tuple(model.example_inputs())
    raise RecipeError("feature and attention distillation need example inputs to size their adaptation layers: "
                      "pass example_inputs=(tensor, ...) or use a student with an example_inputs() method")
