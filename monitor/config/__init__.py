"""Settings: the models of `config.yaml` (schema), loading with `${VAR}` and `*_file`
secrets (loading), and an error report that names every problem by its dotted field path,
in file order (errors).
"""

from monitor.config.errors import ConfigError
from monitor.config.loading import MAX_VALUES, load_settings, require_api_key, settings_from_dict
from monitor.config.schema import (
    ActionsSettings,
    AlertmanagerSettings,
    AlertSettings,
    ApiSettings,
    BasicAuth,
    HttpSettings,
    LogSettings,
    RunPodSettings,
    Settings,
    Silence,
    SlackSettings,
    StateSettings,
    is_loopback,
)

__all__ = [
    "MAX_VALUES",
    "ActionsSettings",
    "AlertSettings",
    "AlertmanagerSettings",
    "ApiSettings",
    "BasicAuth",
    "ConfigError",
    "HttpSettings",
    "LogSettings",
    "RunPodSettings",
    "Settings",
    "Silence",
    "SlackSettings",
    "StateSettings",
    "is_loopback",
    "load_settings",
    "require_api_key",
    "settings_from_dict",
]
