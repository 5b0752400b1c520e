// The console: who is logged in, the page frame, and hash routing to the pages.

import { api, isAbort, liveState, onUnauthorized } from "./api.js";
import { devicePage } from "./device.js";
import { h, notify, refreshRelativeTimes, replace } from "./dom.js";
import { firmwarePage } from "./firmware.js";
import { fleetPage } from "./fleet.js";
import { loginPage } from "./login.js";
import { registryPage } from "./registry.js";

const ROUTES = [
  { pattern: /^\/?$/, nav: "fleet", page: fleetPage },
  { pattern: /^\/device\/(.+)$/, nav: "fleet", page: devicePage },
  { pattern: /^\/firmware\/?$/, nav: "firmware", page: firmwarePage },
  { pattern: /^\/registry(?:\/(.*))?$/, nav: "registry", page: registryPage, admin: true },
];

const root = document.getElementById("app");
let me = null;
let leavePage = null;

function leave() {
  leavePage?.();
  leavePage = null;
}

function showLogin() {
  leave();
  me = null;
  leavePage = loginPage(root, (who) => {
    me = who;
    route();
  });
}

async function logout() {
  try {
    await api("/logout", { method: "POST" });
  } catch (error) {
    notify(`Could not log out: ${error.message}`, "error");
    return;
  }
  showLogin();
}

function liveIndicator() {
  const label = h("span", { class: "live-label" }, "Offline");
  const indicator = h("span", { class: "live", role: "status", "aria-live": "polite" }, label);
  const texts = { open: "Live", connecting: "Connecting…", off: "Not live" };
  const changed = (event) => {
    indicator.dataset.state = event.detail;
    label.textContent = texts[event.detail];
  };
  liveState.addEventListener("change", changed);
  indicator.dataset.state = "off";
  label.textContent = texts.off;
  return { indicator, stop: () => liveState.removeEventListener("change", changed) };
}

function frame(current) {
  const link = (name, href, text) =>
    h("a", { href, "aria-current": current === name ? "page" : null }, text);
  const live = liveIndicator();
  const main = h("main", { id: "main", tabindex: "-1" });
  replace(
    root,
    h("a", { class: "skip", href: "#main", onclick: (e) => { e.preventDefault(); main.focus(); } },
      "Skip to content"),
    h(
      "header",
      { class: "topbar" },
      h("a", { class: "brand", href: "#/" }, h("span", { class: "brand-mark", "aria-hidden": "true" }), "m2m"),
      h(
        "nav",
        { "aria-label": "Main" },
        link("fleet", "#/", "Fleet"),
        link("firmware", "#/firmware", "Firmware"),
        me.admin && link("registry", "#/registry/", "Registry"),
      ),
      h("div", { class: "spacer" }),
      live.indicator,
      h(
        "span",
        { class: "who" },
        h("span", { class: "muted" }, "Signed in as "),
        h("strong", { class: "who-name" }, me.name),
        me.admin && h("span", { class: "tag" }, "admin"),
      ),
      h("button", { type: "button", class: "button-quiet", onclick: logout }, "Log out"),
    ),
    main,
  );
  return { main, stop: live.stop };
}

function route() {
  if (me === null) {
    showLogin();
    return;
  }
  leave();
  const [path, search] = location.hash.replace(/^#/, "").split("?", 2);
  const found = ROUTES.map((r) => ({ ...r, match: r.pattern.exec(path || "/") })).find((r) => r.match);
  const { main, stop } = frame(found?.nav);
  if (!found) {
    main.append(h("section", { class: "card" }, h("h1", {}, "Not found"),
      h("p", {}, "No page here. "), h("a", { href: "#/" }, "Back to the fleet")));
    leavePage = stop;
    return;
  }
  if (found.admin && !me.admin) {
    main.append(h("section", { class: "card" }, h("h1", {}, "Admins only"),
      h("p", {}, "Only an admin may see this page.")));
    leavePage = stop;
    return;
  }
  const args = found.match.slice(1).map((part) => decodeURIComponent(part ?? ""));
  const leaveThis = found.page(main, { me, args, params: new URLSearchParams(search ?? "") });
  leavePage = () => {
    leaveThis?.();
    stop();
  };
}

async function start() {
  onUnauthorized(() => {
    if (me !== null) notify("Your session ended: please log in again.", "error");
    showLogin();
  });
  window.addEventListener("hashchange", route);
  setInterval(refreshRelativeTimes, 15_000);
  try {
    me = await api("/me");
  } catch (error) {
    if (error.status !== 401 && !isAbort(error)) {
      replace(root, h("p", { class: "error", role: "alert" }, `The console cannot start: ${error.message}`));
    }
    return;
  }
  route();
}

start();
