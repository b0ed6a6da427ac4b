-- Where each person has signed in from: a network (an IPv4 /24, an IPv6 /48), first seen in
-- audit event `first_seq`, last seen at `last_at` (unix ms). Read and written by the notifier,
-- which e-mails a person when they sign in from a network new to them. Forgotten after 180
-- days unseen.
CREATE TABLE sign_in_places (
    user_email TEXT   NOT NULL,
    place      TEXT   NOT NULL,
    first_seq  BIGINT NOT NULL,
    last_at    BIGINT NOT NULL,
    PRIMARY KEY (user_email, place)
);
CREATE INDEX sign_in_places_by_last_at ON sign_in_places (last_at);
