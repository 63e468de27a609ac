"""A URLconf for toolkit tests: the real one plus a protected endpoint and a crashing one."""

from django.urls import path
from rest_framework.response import Response
from rest_framework.views import APIView

from nightstorm.urls import urlpatterns as real


class Protected(APIView):
    def get(self, request):
        return Response({"user": request.user.username})


class Crash(APIView):
    authentication_classes = []
    permission_classes = []

    def get(self, request):
        raise RuntimeError("unexpected")


class Deadlocked(Crash):
    def get(self, request):
        from django.db import OperationalError

        class Cause(Exception):
            sqlstate = "40P01"

        raise OperationalError("deadlock detected") from Cause()


class DataErrorView(Crash):
    def get(self, request):
        from django.db import DataError

        raise DataError("value out of range")


class ConnectionLost(Crash):
    def get(self, request):
        from django.db import OperationalError

        class Cause(Exception):
            sqlstate = "57P01"  # admin_shutdown: pg_terminate_backend

        raise OperationalError("terminating connection due to administrator command") from Cause()


class RedisDown(Crash):
    def get(self, request):
        import redis

        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


urlpatterns = [
    *real,
    path("test/protected/", Protected.as_view()),
    path("test/crash/", Crash.as_view()),
    path("test/deadlock/", Deadlocked.as_view()),
    path("test/data-error/", DataErrorView.as_view()),
    path("test/connection-lost/", ConnectionLost.as_view()),
    path("test/redis-down/", RedisDown.as_view()),
]

handler404 = "nightstorm.api.errors.json_404"
handler500 = "nightstorm.api.errors.json_500"
