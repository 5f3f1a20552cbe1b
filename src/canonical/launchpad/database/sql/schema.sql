-- Schema of the sample database (a subset of the Launchpad schema).
-- Loaded once into the template database launchpad_ftest_template by
-- canonical.launchpad.ftests.harness.LaunchpadTestSetup.

SET client_min_messages = warning;

CREATE TABLE person (
    id serial NOT NULL,
    name text NOT NULL,
    displayname text,
    givenname text,
    familyname text,
    password text,
    teamowner integer,
    karma integer NOT NULL DEFAULT 0,
    datecreated timestamp without time zone
        DEFAULT (now() AT TIME ZONE 'UTC'),
    CONSTRAINT person_pkey PRIMARY KEY (id),
    CONSTRAINT person_name_key UNIQUE (name),
    CONSTRAINT valid_name CHECK (name ~ '^[a-z0-9][a-z0-9\+\.\-]*$'),
    CONSTRAINT person_teamowner_fk FOREIGN KEY (teamowner)
        REFERENCES person (id),
    CONSTRAINT no_loops CHECK (id <> teamowner)
);

CREATE INDEX person_teamowner_idx ON person (teamowner);

COMMENT ON TABLE person IS 'A person or, when teamowner is set, a team.';
COMMENT ON COLUMN person.teamowner IS 'The owner of the team; NULL for a person.';
COMMENT ON COLUMN person.karma IS 'A cached score of the person''s activity.';
