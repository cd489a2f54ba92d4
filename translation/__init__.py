"""Translation of WSO2 API Manager API projects into WSO2 APK custom resources (see ``translation.translate``)."""

from translation.content_names import secret_name_key

__all__ = ["secret_name_key"]
