// Security keys (WebAuthn) for the gateway's pages. A form marked data-key="create" (adding a
// key) or data-key="get" (using one), or a form sent with a button so marked, asks the key
// first: the gateway's options come from the form's data-options or the page's #key-options;
// the form then goes on, to the button's formaction if it has one, with the key's answer in
// its "answer" field. Nothing else runs: the gateway checks the answer.
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

document.addEventListener("submit", async (event) => {
  const form = event.target;
  const button = event.submitter;
  const kind = (button && button.dataset.key) || form.dataset.key;
  if (!kind) return;
  event.preventDefault();
  if (!window.PublicKeyCredential) {
    say(form, "This browser cannot use security keys.");
    return;
  }
  const source = form.dataset.options ? form : document.getElementById("key-options");
  const options = JSON.parse(source.dataset.options);
  let answer;
  try {
    if (kind === "create") {
      answer = created(await navigator.credentials.create(creationOptions(options)));
    } else {
      answer = asserted(await navigator.credentials.get(requestOptions(options)));
    }
  } catch (e) {
    say(form, "The security key did not answer (" + e.name + "). Try again.");
    return;
  }
  form.querySelector("input[name=answer]").value = JSON.stringify(answer);
  if (button && button.hasAttribute("formaction")) form.action = button.formAction;
  form.submit();
});
