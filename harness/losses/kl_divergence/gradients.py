"""Gradients with respect to the student's logits, from a backend's autodiff (which differentiates
with respect to a path's first argument, the teacher's here)."""

from __future__ import annotations

import functools


def with_respect_to_student(autodiff_gradient, path):
    """(teacher, student, **options) -> d(sum of path's per-row losses) / d student."""

    @functools.wraps(path)
    def student_first(student, teacher, **options):
        return path(teacher, student, **options)

    gradient = autodiff_gradient(student_first)

    @functools.wraps(path)
    def by_student(teacher, student, **options):
        return gradient(student, teacher, **options)

    return by_student
