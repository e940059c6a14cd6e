DROP TABLE mfa_enrolment_links;
