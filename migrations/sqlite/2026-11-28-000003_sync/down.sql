DROP TABLE sync_lease;
DROP TABLE sync_runs;
DROP TABLE directory_links;
