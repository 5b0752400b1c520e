// The login form: POST /api/v1/login sets the session cookie.

import { api } from "./api.js";
import { h, replace } from "./dom.js";

export function loginPage(root, loggedIn) {
  document.title = "Log in · m2m";
  const user = h("input", { id: "login-user", name: "user", autocomplete: "username", required: true });
  const password = h("input", {
    id: "login-password", name: "password", type: "password",
    autocomplete: "current-password", required: true,
  });
  const problem = h("p", { class: "form-error", role: "alert" });
  const submit = h("button", { type: "submit", class: "button-primary wide" }, "Log in");

  async function send(event) {
    event.preventDefault();
    problem.textContent = "";
    submit.disabled = true;
    try {
      loggedIn(await api("/login", { method: "POST", json: { user: user.value, password: password.value } }));
    } catch (error) {
      problem.textContent =
        error.status === 401 ? "Unknown user or wrong password." : `Could not log in: ${error.message}`;
      password.select();
    } finally {
      submit.disabled = false;
    }
  }

  replace(
    root,
    h(
      "main",
      { class: "login" },
      h(
        "form",
        { class: "card login-card", onsubmit: send, "aria-labelledby": "login-title" },
        h("div", { class: "brand login-brand" }, h("span", { class: "brand-mark", "aria-hidden": "true" }), "m2m"),
        h("h1", { id: "login-title" }, "Log in to the console"),
        h("p", { class: "muted" }, "See and operate your fleet, live."),
        h("label", { for: "login-user" }, "User"),
        user,
        h("label", { for: "login-password" }, "Password"),
        password,
        problem,
        submit,
      ),
    ),
  );
  user.focus();
  return null;
}
