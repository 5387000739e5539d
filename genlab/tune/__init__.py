"""Hyperparameter tuning on Optuna: `genlab tune`, `genlab tune --resume`, `genlab tune --report`,
and `genlab train FAMILY --from-study` (see study.py for the study folder, space.py for the space format)."""

from genlab.tune.report import write_report
from genlab.tune.space import Param, build_space
from genlab.tune.study import OBJECTIVES, StudySettings, best_trial, read_settings, resume, settings_from_study, tune

__all__ = ["OBJECTIVES", "Param", "StudySettings", "best_trial", "build_space", "read_settings", "resume",
           "settings_from_study", "tune", "write_report"]
