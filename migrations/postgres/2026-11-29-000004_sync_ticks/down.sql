DROP TABLE sync_ticks;
