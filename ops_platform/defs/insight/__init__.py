"""Operations insight: database statistics, uptime and backup history as assets with checks, the
alerts on failing database checks, and the morning digest and weekly report (group ``insight``)."""
