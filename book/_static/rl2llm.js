// The edition switch keeps the reader's place. The strip at the top of the page links to
// the same page in the other edition; a copy of that link sits in the sticky bar at the
// top of the window, so it can be used from anywhere on the page. Either one opens the
// other edition at the section being read (the last section whose heading is above the
// top of the window), not at the top of the page.
document.addEventListener("DOMContentLoaded", () => {
  const original = document.querySelector(".edition-strip a.edition-switch-link");
  if (!original) return;
  const bar = document.querySelector(".article-header-buttons") || document.querySelector(".header-article-items__end");
  if (bar) {
    const copy = document.createElement("a");
    copy.className = "btn btn-sm edition-switch-link edition-switch-sticky";
    copy.href = original.getAttribute("href");
    copy.textContent = original.textContent.replace("Read this page in the ", "").replace(" edition", "") + " edition";
    copy.title = original.textContent;
    bar.prepend(copy);
  }
  for (const link of document.querySelectorAll("a.edition-switch-link")) {
    link.addEventListener("click", () => {
      // Only sections that start with a heading are places a reader can be sent to: the
      // inner sections of theorems, algorithms and exercises (proof-content, ...) are not.
      const headed = [...document.querySelectorAll("main section[id]")].filter(
        (section) => section.firstElementChild && /^H[1-6]$/.test(section.firstElementChild.tagName));
      let current = null;
      for (const section of headed) {
        if (section.getBoundingClientRect().top <= 90) current = section;
      }
      // At the very bottom the last sections can never reach the top of the window:
      // then the reader is in the last one whose heading is visible.
      if (window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 2) {
        for (const section of headed) {
          const top = section.getBoundingClientRect().top;
          if (top >= 0 && top < window.innerHeight) current = section;
        }
      }
      const base = link.getAttribute("href").split("#")[0];
      link.setAttribute("href", current && window.scrollY > 0 ? `${base}#${current.id}` : base);
    });
  }
});

// Arriving at a section (#anchor), the browser scrolls there at once; images and typeset
// math that load afterwards push the section down. Put it back at the top when they are
// done, unless the reader has scrolled in the meantime.
(() => {
  if (!window.location.hash) return;
  const target = () => document.getElementById(decodeURIComponent(window.location.hash.slice(1)));
  let readerScrolled = false;
  for (const event of ["wheel", "touchmove", "keydown", "mousedown"]) {
    window.addEventListener(event, () => { readerScrolled = true; }, { once: true, passive: true });
  }
  const settle = () => { const element = target(); if (element && !readerScrolled) element.scrollIntoView(); };
  window.addEventListener("load", () => {
    settle();
    if (window.MathJax && window.MathJax.startup && window.MathJax.startup.promise) {
      window.MathJax.startup.promise.then(settle);
    }
  });
})();
