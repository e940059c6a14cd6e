// provisiond enrolment page: "Add a security key or passkey". Asks the daemon for the creation
// options, lets the browser make the credential, and sends it back with the form (the answer is
// the page with the backup codes). Without WebAuthn in the browser the section stays hidden.
"use strict";

(function () {
  const section = document.getElementById("webauthn");
  const form = document.getElementById("add-key");
  if (!section || !form || !window.PublicKeyCredential || !navigator.credentials) return;
  section.hidden = false;
  const base = window.location.pathname.replace(/\/+$/, "");
  form.action = base + "/webauthn";
  const status = document.getElementById("key-status");
  const button = document.getElementById("add-key-button");

  function bytes(b64url) {
    const b64 = b64url.replace(/-/g, "+").replace(/_/g, "/");
    const raw = atob(b64 + "===".slice((b64.length + 3) % 4));
    return Uint8Array.from(raw, function (c) { return c.charCodeAt(0); });
  }

  function b64url(buffer) {
    let raw = "";
    new Uint8Array(buffer).forEach(function (b) { raw += String.fromCharCode(b); });
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  // The options as the daemon sends them (binary values in base64url) for the browser.
  function creationOptions(json) {
    const options = Object.assign({}, json);
    if (PublicKeyCredential.parseCreationOptionsFromJSON) {
      return PublicKeyCredential.parseCreationOptionsFromJSON(options);
    }
    options.challenge = bytes(options.challenge);
    options.user = Object.assign({}, options.user, { id: bytes(options.user.id) });
    options.excludeCredentials = (options.excludeCredentials || []).map(function (c) {
      return Object.assign({}, c, { id: bytes(c.id) });
    });
    return options;
  }

  function credentialJson(credential) {
    if (credential.toJSON) return credential.toJSON();
    return {
      id: credential.id,
      rawId: b64url(credential.rawId),
      type: credential.type,
      response: {
        clientDataJSON: b64url(credential.response.clientDataJSON),
        attestationObject: b64url(credential.response.attestationObject),
        transports: credential.response.getTransports ? credential.response.getTransports() : [],
      },
      clientExtensionResults: credential.getClientExtensionResults(),
    };
  }

  function say(text) {
    status.textContent = text;
  }

  form.addEventListener("submit", async function (e) {
    e.preventDefault();
    button.disabled = true;
    say("Follow your browser's prompt: touch the key, or confirm on your device.");
    try {
      const answer = await fetch(base + "/webauthn/options", { method: "POST", credentials: "same-origin" });
      if (answer.status === 410) { window.location.reload(); return; }
      const started = await answer.json();
      if (!answer.ok) throw new Error(started.detail || "the server refused to start");
      const credential = await navigator.credentials.create({ publicKey: creationOptions(started.options.publicKey) });
      form.elements.ceremony.value = started.ceremonyId;
      form.elements.credential.value = JSON.stringify(credentialJson(credential));
      say("Saving your security key…");
      form.submit();
    } catch (err) {
      button.disabled = false;
      if (err && err.name === "InvalidStateError") {
        say("This security key is registered already. Use another one, or the authenticator app.");
      } else if (err && err.name === "NotAllowedError") {
        say("No security key was added (the prompt was closed or timed out). Try again when you are ready.");
      } else {
        say("No security key was added: " + (err && err.message ? err.message : err) + ".");
      }
    }
  });
})();
