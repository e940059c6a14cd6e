DROP TABLE operator_setup_links;
DROP TABLE operators;
