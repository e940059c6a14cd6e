DROP TABLE sync_feed;
