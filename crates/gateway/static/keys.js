// Security keys (WebAuthn) for the gateway's pages. A form marked data-key="create" (adding a
// key) or data-key="get" (using one) carries the gateway's options in data-options; on
// submit, the browser asks the key, and the form goes on with the key's answer in its
// "answer" field. Nothing else runs: the gateway checks the answer.
"use strict";

function fromB64url(s) {
  const b64 = s.replace(/-/g, "+").replace(/_/g, "/");
  const padded = b64 + "=".repeat((4 - (b64.length % 4)) % 4);
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

function toB64url(buf) {
  let s = "";
  for (const b of new Uint8Array(buf)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// The gateway's options with their binary fields as the browser wants them.
function creationOptions(o) {
  const pk = o.publicKey;
  pk.challenge = fromB64url(pk.challenge);
  pk.user.id = fromB64url(pk.user.id);
  for (const c of pk.excludeCredentials || []) c.id = fromB64url(c.id);
  return o;
}

function requestOptions(o) {
  const pk = o.publicKey;
  pk.challenge = fromB64url(pk.challenge);
  for (const c of pk.allowCredentials || []) c.id = fromB64url(c.id);
  return o;
}

function created(cred) {
  const r = cred.response;
  return {
    id: cred.id,
    rawId: toB64url(cred.rawId),
    type: cred.type,
    extensions: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
    response: {
      attestationObject: toB64url(r.attestationObject),
      clientDataJSON: toB64url(r.clientDataJSON),
      transports: r.getTransports ? r.getTransports() : [],
    },
  };
}

function asserted(cred) {
  const r = cred.response;
  return {
    id: cred.id,
    rawId: toB64url(cred.rawId),
    type: cred.type,
    extensions: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
    response: {
      authenticatorData: toB64url(r.authenticatorData),
      clientDataJSON: toB64url(r.clientDataJSON),
      signature: toB64url(r.signature),
      userHandle: r.userHandle ? toB64url(r.userHandle) : null,
    },
  };
}

function say(form, text) {
  const box = form.querySelector(".key-error");
  if (box) {
    box.textContent = text;
    box.hidden = false;
  }
}

for (const form of document.querySelectorAll("form[data-key]")) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!window.PublicKeyCredential) {
      say(form, "This browser cannot use security keys.");
      return;
    }
    const options = JSON.parse(form.dataset.options);
    let answer;
    try {
      if (form.dataset.key === "create") {
        answer = created(await navigator.credentials.create(creationOptions(options)));
      } else {
        answer = asserted(await navigator.credentials.get(requestOptions(options)));
      }
    } catch (e) {
      say(form, "The security key did not answer (" + e.name + "). Try again.");
      return;
    }
    form.querySelector("input[name=answer]").value = JSON.stringify(answer);
    form.submit();
  });
}
