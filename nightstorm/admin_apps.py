"""django.contrib.admin's app config with the Nightstorm site as `admin.site` (listed in
INSTALLED_APPS in place of "django.contrib.admin")."""

from django.contrib.admin.apps import AdminConfig


class NightstormAdminConfig(AdminConfig):
    default_site = "nightstorm.admin_site.NightstormAdminSite"
