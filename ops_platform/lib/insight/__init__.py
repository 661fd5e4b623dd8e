"""Operations insight: database statistics, uptime and backup history, as plain Python."""
