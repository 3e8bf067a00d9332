"""Stage I teachers: any OpenAI-compatible endpoint, or the offline rules teacher."""

from .base import Teacher, TeacherError, TeacherFormatError, TeacherOutput, TeacherSample, Usage
from .rules_teacher import RulesTeacher

__all__ = [
    "OpenAITeacher",
    "RulesTeacher",
    "Teacher",
    "TeacherError",
    "TeacherFormatError",
    "TeacherOutput",
    "TeacherSample",
    "Usage",
]


def __getattr__(name: str):
    if name == "OpenAITeacher":  # imported on first use: the openai client is slow to import
        from .openai_teacher import OpenAITeacher

        return OpenAITeacher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
