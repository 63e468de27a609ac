"""`manage.py migrate_connection_state [--dry-run]`: legacy JSON keys -> the hash layout."""

import signal
import sys
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from connections.store import legacy


class Command(BaseCommand):
    help = (
        "Convert legacy connection keys (connection:<handle>, one JSON string each) into the "
        "hash layout (ns:{conn}:<handle>, ns:{conn}:<handle>:meta, live set, player index). "
        "Keys of the hash layout written before it was hash-tagged (ns:conn:…) move to "
        "ns:{conn}:… first. Idempotent: a second run finds nothing to convert. --dry-run only "
        "counts."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="Report what would change; write nothing."
        )
        parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")

    def handle(self, *args, dry_run=False, no_progress=False, **options):
        if not settings.REDIS_URL:
            raise CommandError("REDIS_URL is not set: there is no shared connection store.")
        from django_redis import get_redis_connection

        client = get_redis_connection("default")
        stop = {"requested": False}

        def request_stop(signum, frame):
            stop["requested"] = True  # finish the key in hand, then stop

        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, request_stop) if main_thread else None
        try:
            retagged = legacy.retag(client, dry_run=dry_run)
            handles = legacy.legacy_handles(client)
            with tqdm(
                total=len(handles),
                unit="key",
                disable=no_progress or not handles,
                file=sys.stderr,
            ) as bar:
                outcomes = legacy.migrate(
                    client,
                    dry_run=dry_run,
                    handles=handles,
                    progress=lambda _outcome: bar.update(1),
                    should_stop=lambda: stop["requested"],
                )
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)
        verb = "would convert" if dry_run else "converted"
        summary = (
            f"{'dry run: ' if dry_run else ''}{len(handles)} legacy keys: "
            f"{outcomes[legacy.CONVERTED] + outcomes[legacy.MERGED]} {verb} "
            f"({outcomes[legacy.MERGED]} merged into existing hashes), "
            f"{outcomes[legacy.INVALID]} invalid left in place, "
            f"{outcomes[legacy.BUSY]} busy, {outcomes[legacy.GONE]} gone"
            f"; {retagged} keys of the untagged layout {'to move' if dry_run else 'moved'} "
            "to ns:{conn}:"
            f"{'; stopped by SIGTERM' if outcomes['stopped'] else ''}"
        )
        self.stdout.write(summary)
        return None
