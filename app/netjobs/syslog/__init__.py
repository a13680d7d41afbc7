"""The syslog receiver: configuration-change messages from devices trigger a backup.

``python -m netjobs.syslog`` listens on UDP and TCP (systemd socket activation, or its own bind on
``NETJOBS_SYSLOG_LISTEN``), recognizes configuration-change messages (:mod:`.changes`), maps the
sender to a device (:mod:`.devices`), waits until a device's burst of changes has been quiet for
``NETJOBS_SYSLOG_DEBOUNCE_SECONDS`` (:mod:`.debounce`) and then submits one
``netjobs.backup.device`` with the user the messages named (:mod:`.submit`). Lines are split and
parsed in :mod:`.frames` and :mod:`.messages`; :mod:`.server` ties it together.

Nothing here touches the database or Redis at import.
"""
