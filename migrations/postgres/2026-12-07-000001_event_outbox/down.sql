DROP TABLE ssf_streams;
DROP TABLE event_receivers;
DROP TABLE event_deliveries;
DROP TABLE events;
