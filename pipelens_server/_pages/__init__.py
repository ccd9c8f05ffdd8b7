"""The HTML pages room: one pages Router, templates, the Gantt chart and the other charts."""
