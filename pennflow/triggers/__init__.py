"""Event-driven runs: a dataset receives new files, a trigger rule starts one run per burst.

How an upload becomes a run::

    signed webhook (lambdas/webhook.py) ──┐
                                          ├─> intake.TriggerIntake.accept(DatasetEvent)
    EventBridge (lambdas/trigger_events.py)┘      claim the delivery once, match the dataset's rules,
                                                  add the files to each rule's debounce window
    SQS (delayed) -> lambdas/trigger_fire.py -> debounce.Debouncer.fire: close the window once,
                                                  start one run through the RunStarter port

- ``models``: trigger rules, dataset events, windows (pydantic);
- ``store``: the store port and its DynamoDB adapter; ``memory``: in-memory adapters;
- ``signing``: the webhook's HMAC signatures and the secret they are checked against;
- ``debounce``: windows, the fire queue and the RunStarter port; ``intake``: events -> windows;
- ``webhook``: the HTTP side of the webhook; ``api``: the trigger rule routes (Powertools Router);
- ``starter``: the RunStarter that starts runs as POST /runs does; ``wiring``: the Lambdas' settings.
"""
