"""`manage.py jackpot_audit`: check the ledger invariant of every pool; non-zero exit on a break."""

import signal

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from jackpot.ledger import audit_pools


class Command(BaseCommand):
    help = (
        "Check every jackpot pool: amount (the sum of its stripes) == sum of its ledger, each "
        "stripe's last balance_after == its amount, and each ledger row's balance_after == the "
        "stripe's previous balance_after + amount. Prints a table; exits with status 1 when "
        "anything does not match."
    )

    def handle(self, *args, **options):
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        previous = signal.signal(signal.SIGTERM, stop)
        try:
            # One statement reads all pools and ledgers from one snapshot, so it runs once;
            # the progress bar walks the results.
            results = audit_pools()
            header = ("group", "amount", "ledger_sum", "stripes_off", "rows", "chain_breaks", "ok")
            rows = []
            for r in tqdm(results, desc="pools", disable=None, file=self.stderr):
                if stopping:
                    raise CommandError("stopped by SIGTERM before the audit finished")
                rows.append(
                    (
                        r.group,
                        r.amount,
                        r.ledger_sum,
                        r.stripes_off,
                        r.ledger_rows,
                        r.chain_breaks,
                        "yes" if r.ok else "NO",
                    )
                )
        finally:
            signal.signal(signal.SIGTERM, previous)
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
        for line in (header, *rows):
            self.stdout.write(
                "  ".join(str(x).rjust(w) for x, w in zip(line, widths, strict=False))
            )
        bad = [r.group for r in results if not r.ok]
        if bad:
            raise CommandError(
                f"jackpot audit: {len(bad)} of {len(results)} pools do not match: {', '.join(bad)}"
            )
        self.stdout.write(f"jackpot audit: {len(results)} pools ok")
