from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("nightstorm", "0004_idempotency_body_text"),
    ]

    operations = [
        migrations.AddField(
            model_name="idempotencyrecord",
            name="claim_token",
            field=models.CharField(blank=True, default="", max_length=32),
        ),
        migrations.AddField(
            model_name="idempotencyrecord",
            name="claimed_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
