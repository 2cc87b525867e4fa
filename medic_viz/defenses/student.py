"""What MEDIC accepts as its student: a model with the teacher's parameters and buffers
(names, shapes, dtypes), and never the teacher itself or a copy of its weights."""

from __future__ import annotations

import torch
import torch.nn as nn

from medic_viz.capture import StructureMismatchError

__all__ = ["check_student_fits", "check_student_is_not_teacher"]


def check_student_fits(teacher: nn.Module, student: object) -> None:
    """A ``student=`` must be an ``nn.Module`` with the teacher's parameters and buffers — the
    same qualified names, shapes and dtypes (other widths, class or input-channel counts, module
    names or precision would fail deep inside training); TypeError or :class:`StructureMismatchError`
    (a ValueError), one line, naming the first difference. Shapes only: nothing is run."""
    if not isinstance(student, nn.Module):
        raise TypeError(f"student must be a torch.nn.Module, got {type(student).__name__}; omit student= to clone "
                        "into a fresh copy of the teacher's structure")
    hint = ("MEDIC clones into a model of the same structure as the teacher: build the student with the teacher's "
            "architecture, or omit student= (a fresh copy is made)")
    t_state = {**dict(teacher.named_parameters()), **dict(teacher.named_buffers())}
    s_state = {**dict(student.named_parameters()), **dict(student.named_buffers())}
    for name, t in t_state.items():
        s = s_state.get(name)
        module = name.rpartition(".")[0] or "(the model)"
        if s is None:
            raise StructureMismatchError(f"student has no {name!r} (the teacher's module {module!r} has it); {hint}")
        if tuple(s.shape) != tuple(t.shape):
            raise StructureMismatchError(f"student.{name}: the student's shape {tuple(s.shape)} differs from the teacher's "
                             f"{tuple(t.shape)} (module {module!r}); {hint}")
        if s.dtype != t.dtype:
            raise StructureMismatchError(f"student.{name}: the student's dtype {str(s.dtype).removeprefix('torch.')} differs "
                                         f"from the teacher's {str(t.dtype).removeprefix('torch.')}; convert it (e.g. "
                                         "student.float()) or omit student=")
    extra = [n for n in s_state if n not in t_state]
    if extra:
        raise StructureMismatchError(f"student has {extra[0]!r}, which the teacher does not"
                         f"{f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''}; {hint}")


def check_student_is_not_teacher(teacher: nn.Module, student: nn.Module) -> None:
    """MEDIC clones *into a fresh model*: the teacher itself (which would be trained in place)
    or a copy of its weights (which keeps the backdoor) is refused."""
    hint = "omit student= (a fresh copy is made) or pass medic_viz.defenses.base.fresh_copy(teacher)"
    if student is teacher:
        raise ValueError(f"student is the teacher itself; MEDIC would train the trojaned model in place: {hint}")
    t_params = dict(teacher.named_parameters())
    s_params = dict(student.named_parameters())
    t_storage = {p.data_ptr() for p in t_params.values()}
    if any(p.data_ptr() in t_storage for p in s_params.values()):
        raise ValueError(f"student shares weight tensors with the teacher; training it would change the teacher: {hint}")
    if s_params and all(k in t_params and p.shape == t_params[k].shape
                        and torch.equal(p.detach().cpu(), t_params[k].detach().cpu()) for k, p in s_params.items()):
        raise ValueError(f"student holds exactly the teacher's weights (a copy of the trojaned model keeps its backdoor): {hint}")
