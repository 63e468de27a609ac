from django.apps import AppConfig


class ToolkitTestsConfig(AppConfig):
    name = "tests.toolkit_app"
    label = "toolkit_tests"
    default_auto_field = "django.db.models.BigAutoField"
