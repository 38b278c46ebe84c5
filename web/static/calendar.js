/* The calendar page: FullCalendar on the JSON feed; dragging a task PATCHes it through the record API with
   If-Match, so a drag based on a stale copy gets 412 and the calendar reloads instead of overwriting. */
(function () {
  "use strict";
  var el = document.getElementById("calendar");
  if (!el || !window.FullCalendar) return;
  var narrow = window.matchMedia("(max-width: 576px)").matches;

  function move(info) {
    var props = info.event.extendedProps;
    if (props.entity !== "tasks") { info.revert(); return; }
    var body = { due_at: info.event.start.toISOString(), all_day: info.event.allDay };
    fetch(el.dataset.api + "/tasks/" + props.record_id, {
      method: "PATCH",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": el.dataset.csrf,
                 "If-Match": 'W/"' + props.version + '"' },
      body: JSON.stringify(body)
    }).then(function (response) {
      if (response.ok) {
        var etag = response.headers.get("ETag") || "";
        var version = parseInt(etag.replace(/\D/g, ""), 10);
        if (version) info.event.setExtendedProp("version", version);
        calendar.refetchEvents();  // the reminder moved with it; other fields may have changed
        return;
      }
      info.revert();
      window.alert(response.status === 412 ? el.dataset.stale : el.dataset.failed);
      if (response.status === 412) calendar.refetchEvents();
    }).catch(function () { info.revert(); window.alert(el.dataset.failed); });
  }

  var calendar = new window.FullCalendar.Calendar(el, {
    locale: el.dataset.locale,
    initialView: narrow ? "listWeek" : "dayGridMonth",
    headerToolbar: narrow
      ? { left: "prev,next", center: "title", right: "today" }
      : { left: "prev,next today", center: "title", right: "dayGridMonth,timeGridWeek,timeGridDay,listWeek" },
    footerToolbar: narrow ? { center: "dayGridMonth,timeGridDay,listWeek" } : false,
    timeZone: "local",
    height: "auto",
    nowIndicator: true,
    dayMaxEvents: true,
    eventDisplay: "block",     // coloured blocks everywhere: the dot style put coloured text on our colours
    editable: true,            // each event says whether it may move (the viewer may edit it)
    eventStartEditable: true,
    eventDurationEditable: false,
    events: { url: el.dataset.events, failure: function () { window.alert(el.dataset.failed); } },
    eventDrop: move,
    eventDidMount: function (info) {
      var owner = info.event.extendedProps.owner;
      if (owner) info.el.title = info.event.title + " · " + owner;
    }
  });
  calendar.render();
})();
