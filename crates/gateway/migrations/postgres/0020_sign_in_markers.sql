-- Each person's first noted sign-in, kept for good as the place '' (places are forgotten after
-- 180 days unseen; this row is not): a sign-in from a new network after a long absence is
-- news, and so is one by someone who signed in before places were kept. Seeded from the
-- sign-ins already on the trail and the places already kept.
INSERT INTO sign_in_places (user_email, place, first_seq, last_at)
SELECT user_email, '', MIN(seq), MAX(ts)
FROM audit_events
WHERE action = 'gateway:auth:signin' AND rbac_decision = 'allow' AND user_email IS NOT NULL
GROUP BY user_email
ON CONFLICT (user_email, place) DO NOTHING;

INSERT INTO sign_in_places (user_email, place, first_seq, last_at)
SELECT user_email, '', MIN(first_seq), MAX(last_at)
FROM sign_in_places
WHERE place <> ''
GROUP BY user_email
ON CONFLICT (user_email, place) DO NOTHING;
