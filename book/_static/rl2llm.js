// The edition switch keeps the reader's place: clicking "Read this page in the other
// edition" opens the other edition at the section being read (the last heading above
// the top of the window), not at the top of the page.
document.addEventListener("DOMContentLoaded", () => {
  for (const link of document.querySelectorAll("a.edition-switch-link")) {
    link.addEventListener("click", () => {
      const sections = document.querySelectorAll("main section[id], article section[id]");
      let current = null;
      for (const section of sections) {
        if (section.getBoundingClientRect().top <= 80) current = section;
      }
      const base = link.href.split("#")[0];
      link.href = current && window.scrollY > 0 ? `${base}#${current.id}` : base;
    });
  }
});
